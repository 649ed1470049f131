"""figures: renderers from results to matplotlib figures. Computes no loss.

Every renderer takes result objects, plain arrays/dicts or result files, returns a
``matplotlib.figure.Figure`` (built without pyplot, so nothing needs closing) and saves it when
given ``save="out.png"`` (``.png``, ``.pdf`` or ``.svg``):

* :func:`figures.curves.plot_curves`: 1D curves with seed bands;
* :func:`figures.surfaces.plot_surface`, :func:`~figures.surfaces.plot_surface_file`,
  :func:`~figures.surfaces.plot_surfaces`: contour / filled contour / heatmap / 3D panels, side by
  side on a shared colour scale;
* :func:`figures.fisher.plot_fisher`: Fisher scores by tensor and layer;
* :func:`figures.spectrum.plot_spectral_density`; :func:`figures.convergence.plot_convergence`;
* :func:`figures.audit.plot_audit`: multi-panel sensitivity audit;
* :func:`figures.block_spectra.plot_block_spectra`: per-block Hessian densities, λ₁ and trace by layer;
* :func:`figures.comparison.plot_mask_metrics`: sharpness metrics per Fisher mask;
* :func:`figures.fisher_sharpness.plot_mask_sweep`: top vs stratified against the mask fraction;
* :func:`figures.intervals.plot_intervals`: estimates with intervals (forest plot);
  :func:`~figures.intervals.plot_surface_rows`: rows of surfaces, one colour scale per row;
* :func:`figures.vtp.write_vtp`: ParaView export;
* :func:`figures.training.plot_training_curvature`: curvature measured during training, with 2/η;
* :func:`figures.dropout.plot_metric_vs_size`, :func:`~figures.dropout.plot_site_rates`: the
  guided-dropout study.

``import figures`` imports matplotlib (without pyplot) and numpy, never torch: renderers that read
``landscape`` results import it inside the call.
"""

from figures.audit import plot_audit
from figures.block_spectra import plot_block_spectra
from figures.comparison import plot_mask_metrics
from figures.convergence import plot_convergence
from figures.curves import plot_curves
from figures.dropout import plot_metric_vs_size, plot_site_rates
from figures.fisher import plot_fisher
from figures.fisher_sharpness import plot_mask_sweep
from figures.intervals import plot_intervals, plot_surface_rows
from figures.spectrum import plot_spectral_density
from figures.surfaces import plot_surface, plot_surface_file, plot_surfaces
from figures.training import plot_training_curvature
from figures.vtp import surface_file_to_vtp, write_vtp

__all__ = [
    "plot_audit",
    "plot_block_spectra",
    "plot_convergence",
    "plot_curves",
    "plot_fisher",
    "plot_intervals",
    "plot_mask_sweep",
    "plot_mask_metrics",
    "plot_metric_vs_size",
    "plot_site_rates",
    "plot_spectral_density",
    "plot_surface",
    "plot_surface_file",
    "plot_surface_rows",
    "plot_surfaces",
    "plot_training_curvature",
    "surface_file_to_vtp",
    "write_vtp",
]
