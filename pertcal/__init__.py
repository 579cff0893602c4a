"""pertcal: calibrated benchmarking of single-cell genetic perturbation models."""

__version__ = "0.1.0"
