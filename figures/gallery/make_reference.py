"""Render the guided-dropout reference surfaces side by side (run by hand from the repo root).

    python figures/gallery/make_reference.py [REFERENCE_DIR]

The surfaces are found as ``--reference`` finds them (:func:`analyses.reference.find_reference`):
REFERENCE_DIR when given, else $LANDSCAPE_REFERENCE, else ``../shared/reference`` beside the
repository. Writes figures/gallery/reference_guided_dropout.png: the published MLM-loss surfaces of
bert-base-uncased (Sharma et al., 2024) when every tensor, the top-Fisher half or the
bottom-Fisher half is perturbed, on one colour scale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from analyses.reference import find_reference
from figures.surfaces import plot_surfaces

OUT = Path(__file__).with_name("reference_guided_dropout.png")

if __name__ == "__main__":
    ref = find_reference(sys.argv[1] if len(sys.argv) > 1 else None)
    plot_surfaces(
        {
            "all 202 tensors": ref / "surf_res256_bert.h5",
            "101 highest-Fisher tensors": ref / "surf_res256_bert_fisher_top.h5",
            "101 lowest-Fisher tensors": ref / "surf_res256_bert_fisher_bottom.h5",
        },
        kind="contourf",
        levels=16,
        title="MLM loss of bert-base-uncased around the pretrained weights (guided-dropout surfaces, 16×16 grid)",
        panel_size=3.4,
        dpi=110,
        save=OUT,
    )
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")
