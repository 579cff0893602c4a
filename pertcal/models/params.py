"""Hyperparameter specs (default, type, range per parameter) and their validation.

Validation runs before any data is read or any training starts, so a typo or a wrong type fails in seconds with a
message naming the model, the dataset, the file the parameters came from, and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

from pertcal.io import PertcalInputError

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", type(None): "null"}


@dataclass(frozen=True)
class Param:
    """One hyperparameter: default, accepted types, an optional range check and what the check demands."""

    default: Any
    types: tuple[type, ...]
    check: Callable[[Any], bool] | None = None
    rule: str = ""

    def problem(self, value) -> str | None:
        """Why `value` is not acceptable (None if it is)."""
        # bool is a subclass of int: refuse True where a count is expected, accept ints where floats are
        ok_type = any(
            (isinstance(value, t) and not (isinstance(value, bool) and t is not bool))
            or (t is float and isinstance(value, int) and not isinstance(value, bool))
            for t in self.types
        )
        if not ok_type:
            wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in self.types)
            return f"must be {wanted}, got {value!r} ({type(value).__name__})"
        if value is not None and self.check is not None and not self.check(value):
            return f"= {value!r} {self.rule}"
        return None


def positive_int(default: int) -> Param:
    return Param(default, (int,), lambda v: v >= 1, "must be at least 1")


def non_negative(default: float) -> Param:
    return Param(default, (float,), lambda v: v >= 0, "must be non-negative")


def positive(default: float) -> Param:
    return Param(default, (float,), lambda v: v > 0, "must be positive")


def choice(default: str, options: tuple[str, ...]) -> Param:
    return Param(default, (str,), lambda v: v in options, f"must be one of {', '.join(options)}")


def optional_file(default: str | None = None) -> Param:
    return Param(default, (str, type(None)))


# Shared by every torch model: optimiser, schedule, checkpoint selection, seed.
TRAINING = {
    "epochs": positive_int(100),
    "batch_size": positive_int(256),
    "lr": positive(1e-3),
    "weight_decay": non_negative(0.0),
    "lr_step": Param(0, (int,), lambda v: v >= 0, "must be non-negative (0 = constant learning rate)"),
    "lr_gamma": Param(0.2, (float,), lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "val_every": positive_int(1),
    "seed": Param(42, (int,), lambda v: v >= 0, "must be non-negative"),
}


def with_defaults(spec: dict[str, Param], **defaults) -> dict[str, Param]:
    """A copy of `spec` with some defaults changed (a model's published settings over the shared ones)."""
    return {name: replace(p, default=defaults[name]) if name in defaults else p for name, p in spec.items()}


def context(model: str, dataset: str, source: str) -> str:
    """How messages name a job's hyperparameters: the model, the dataset and where the parameters came from."""
    return f"model {model!r}, dataset {dataset!r}, file {source}"


def resolve_params(
    spec: dict[str, Param], given: dict, *, model: str, dataset: str, source: str, files: tuple[str, ...] = ()
) -> dict:
    """Defaults overlaid with `given`; raise PertcalInputError on an unknown key, a wrong type or a missing file.

    `files` names the parameters that hold paths to input files (one path or a list of paths): each must exist.
    """
    where = context(model, dataset, source)
    if not isinstance(given, dict):
        raise PertcalInputError(f"{where}: hyperparameters must be a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise PertcalInputError(
            f"{where}: unknown hyperparameter {unknown[0]!r} (known: {', '.join(sorted(spec))})"
        )
    resolved = {name: given.get(name, p.default) for name, p in spec.items()}
    for name, p in spec.items():
        problem = p.problem(resolved[name])
        if problem:
            raise PertcalInputError(f"{where}: hyperparameter {name!r} {problem}")
    for name in files:
        value = resolved.get(name)
        for path in value if isinstance(value, list) else [value]:
            if path is not None and not Path(path).is_file():
                raise PertcalInputError(f"{where}: hyperparameter {name!r} names {path!r}, which does not exist")
    return resolved


@dataclass(frozen=True)
class Implementation:
    """A model implementation's hyperparameters and their validation; subclasses add `train` and `predict`."""

    params: dict[str, Param]
    files: ClassVar[tuple[str, ...]] = ()  # the parameters naming input files, which must exist

    def validate(self, given: dict, *, model: str, dataset: str, source: str) -> dict:
        """The parameters to train with: `given` over the defaults, each checked, then `check`ed together."""
        resolved = resolve_params(self.params, given, model=model, dataset=dataset, source=source, files=self.files)
        return self.check(given, resolved, where=context(model, dataset, source))

    def check(self, given: dict, params: dict, *, where: str) -> dict:
        """Checks across parameters (none here; a subclass's own), before any data is read; returns `params`."""
        return params
