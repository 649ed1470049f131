"""landscape: loss-landscape analysis for PyTorch and Hugging Face models.

Core layer (it never imports matplotlib, ``analyses`` or ``figures``)::

    objectives  params  vectors  perturb  sharpness     the loss, the space, θ₀ + δ, sharpness
    fisher/       diagonal Fisher estimators, FisherDiagonal, convergence
    curvature/    Hessian / Fisher operators and Lanczos, trace, density
    scans/        directions, 1D/2D scans, Curve / Surface, Li et al.'s HDF5
    models/       checkpoints, the default model, its corpus
    dropout/      guided dropout: sites, Fisher-guided rates, apply / measure
    util/         evaluation state, data checks, fingerprints, files, distributed

Import the submodules by their real paths (``from landscape import curvature``,
``from landscape.scans import directions``); ``import landscape`` alone loads none of them.
"""

__version__ = "0.2.0"
