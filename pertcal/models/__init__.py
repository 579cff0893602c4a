"""Perturbation models behind one train/predict contract (docs/models.md); `pertcal-model` is their command."""
