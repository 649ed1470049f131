"""The study's settings (:class:`FisherSharpnessConfig`): every command-line flag, its default and check.

Defaults are sized for the main job: the embedded default model within about 3 minutes cached on
a quiet 2-core CPU, with 4 disjoint Fisher samples, 2 MLM mask draws and both direction
constructions. ``--budget`` caps any run: when the estimate on the reference 2-core CPU (from the
model's size, not a timing) exceeds it, the study lowers seeds, curve seeds, grid, evaluation
sequences, mask draws and Fisher samples in that order
(:func:`analyses.fisher_sharpness.estimate.fit_budget`) and says what it lowered.
"""

from __future__ import annotations

from dataclasses import dataclass

from analyses.cli.config_flags import seed_count, symmetric_range
from analyses.study import TextSettings, setting

SWEEP = (0.01, 0.03, 0.1, 0.25)


@dataclass
class FisherSharpnessConfig(TextSettings):
    """Settings of the Fisher-sharpness study (see the module docstring for the defaults' budget)."""

    checkpoint: str = setting("default", "local Hugging Face checkpoint directory, .safetensors or .pt file; 'default' "
                              "uses the embedded default model", positional=True)
    out: str = setting("runs/fisher-sharpness", "output folder (created if missing)", affects="nothing")
    texts: str | None = setting(None, "UTF-8 file, one text per line, each its own document for the bootstrap "
                                      "(default: the held-out stdlib docstrings)")
    models: int = setting(1, "independently pretrained default models (seeds 0..N-1), a level of the bootstrap")
    max_length: int = setting(128, "tokens per sequence at most (capped at the model's positions)")
    fisher_samples: int = setting(4, "disjoint Fisher samples per model, masks recomputed on each")
    fisher_examples: int = setting(32, "held-out sequences per Fisher sample", flag="--examples")
    fisher_loss: str = setting("mean", "per-example loss of the empirical Fisher: 'mean' token loss (the paper's) "
                               "or 'sum'", choices=("mean", "sum"))
    eval_examples: int = setting(64, "held-out sequences of the evaluation pool, disjoint from the Fisher ones")
    mask_draws: int = setting(2, "MLM mask draws (objective seeds SEED, SEED+1, ...), a level of the bootstrap")
    batch_size: int = setting(32, "sequences per batch")
    fractions: tuple[float, ...] = setting(SWEEP, "arm E mask sizes (the sweep), fractions in (0, 0.5]")
    fraction: float = setting(0.1, "the main mask size (one of --fractions): the answers' endpoints")
    seeds: tuple[int, ...] = setting((0, 1, 2, 3), "number of direction seeds, SEED, SEED+1, ... (at least 2; random "
                                     "masks are redrawn per seed)", cli=seed_count(4, minimum=2))
    curve_seeds: int = setting(2, "the first seeds that also get 1D curves, loss rise and basin width (at most "
                                  "--seeds)")
    fd_step: float = setting(0.01, "h of the second difference, in units of the direction")
    range_1d: float = setting(1.5, "1D and 2D scan range", flag="--range", cli=symmetric_range(1.5))
    points_1d: int = setting(7, "points of each 1D curve", flag="--points")
    loss_rise_step: float = setting(0.5, "the step at which the loss rise is reported")
    basin_delta: float = setting(1.0, "basin = where the loss stays below L(θ₀) + basin_delta nats")
    basin_max_alpha: float = setting(16.0, "the line is extended up to this coefficient before censoring")
    grid_2d: int = setting(15, "points per side of arm P's 2D surfaces", flag="--grid")
    range_2d: float | None = setting(None, "2D range (default: the 1D range)", hidden=True)
    surface_examples: int = setting(32, "pool sequences used for the 2D surfaces")
    trace_matvecs: int = setting(4, "Hutchinson probes (one matvec each) per arm E mask")
    eig_iters: int = setting(6, "Lanczos steps per arm E mask")
    eig_tol: float = setting(1e-2, "relative tolerance of the top eigenvalue")
    eig_examples: int = setting(32, "pool sequences for the Hessian-vector products (eigenvalue, FD check)")
    n_boot: int = setting(2000, "bootstrap replicates", flag="--bootstrap")
    mask_prob: float = setting(0.15, "MLM mask probability")
    seed: int = setting(0, "random seed (first direction seed, first MLM mask draw)")
    budget: float = setting(20.0, "minutes the run may take on the reference 2-core CPU, from the model's size: "
                                  "settings are lowered until the estimate fits (0: no cap)", affects="nothing")
    reference: str | None = setting("auto", "the paper's surfaces to show beside arm P: a folder, 'auto' (--reference "
                                    "lookup: $LANDSCAPE_REFERENCE, ../shared/reference) or 'none'", affects="nothing")
    device: str = setting("cpu", "torch device, e.g. cpu or cuda:0", affects="nothing")
    resume: bool = setting(False, "reuse finished parts in --out; refuses parts computed with other settings",
                           affects="nothing")

    def __post_init__(self) -> None:
        self.fractions, self.seeds = tuple(float(f) for f in self.fractions), tuple(int(s) for s in self.seeds)
        self.range_2d = self.range_1d if self.range_2d is None else self.range_2d
        self.curve_seeds = min(self.curve_seeds, len(self.seeds))
        self.check()

    def check(self) -> None:
        """One clear error per bad setting, naming the fix."""
        if not self.fractions or any(not 0.0 < f <= 0.5 for f in self.fractions):
            raise ValueError("fractions must lie in (0, 0.5] (top and bottom masks must not overlap), got "
                             f"{self.fractions}.")
        if not any(abs(self.fraction - f) < 1e-12 for f in self.fractions):
            raise ValueError(f"--fraction {self.fraction:g} is not among --fractions {self.fractions}; add it.")
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("give at least two distinct direction seeds (--seeds 2 or more: a spread needs two), got "
                             f"{self.seeds}.")
        if self.models < 1 or self.fisher_samples < 1 or self.mask_draws < 1:
            raise ValueError("--models, --fisher-samples and --mask-draws must each be ≥ 1.")
        if self.fisher_loss not in ("mean", "sum"):
            raise ValueError(f"--fisher-loss must be 'mean' or 'sum', got {self.fisher_loss!r}.")
        if self.fisher_examples < 1 or self.eval_examples < 2:
            raise ValueError("fisher_examples must be ≥ 1 and eval_examples ≥ 2 (a bootstrap over documents needs "
                             "two).")
        if self.points_1d < 3 or self.grid_2d < 3:
            raise ValueError("use at least 3 points in 1D and a 3×3 grid in 2D.")
        if not (self.fd_step > 0 and self.range_1d > 0 and (self.range_2d or 0) > 0
                and 0 < self.loss_rise_step <= self.range_1d):
            raise ValueError("fd_step, range_1d and range_2d must be > 0, and loss_rise_step within (0, range_1d].")
        if self.surface_examples < 1 or self.eig_examples < 1:
            raise ValueError("surface_examples and eig_examples must be ≥ 1.")
        if self.trace_matvecs < 2 or self.eig_iters < 1 or self.n_boot < 100 or self.budget < 0:
            raise ValueError("need trace_matvecs ≥ 2 (for a standard error), eig_iters ≥ 1, n_boot ≥ 100 and "
                             "budget ≥ 0.")
