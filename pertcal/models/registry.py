"""Model implementations by name: each has `params`, `validate(...)`, `train(...)` and `predict(...)`.

A config entry under `models:` names one of these with `model:` (default: the entry's own name), so variants of one
implementation (e.g. fMLP with another embedding table) are config only.
"""

from __future__ import annotations

from pertcal.io import PertcalInputError
from pertcal.models import fmlp, gears_model, perturbench, presage, scgpt_model, sclambda

MODELS = {
    "fmlp": fmlp.MODEL,
    "linear_additive": perturbench.LINEAR_ADDITIVE,
    "latent_additive": perturbench.LATENT_ADDITIVE,
    "decoder_only": perturbench.DECODER_ONLY,
    "gears": gears_model.MODEL,
    "scgpt": scgpt_model.MODEL,
    "sclambda": sclambda.MODEL,
    "presage": presage.MODEL,
}


def get_model(name: str):
    """The implementation registered as `name`."""
    if name not in MODELS:
        raise PertcalInputError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]
