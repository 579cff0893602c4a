"""Atomic writers and validated readers for the files stages exchange (see docs/architecture.md)."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import pandas as pd


class PertcalInputError(ValueError):
    """Bad input: the message names the dataset, the file and the field."""


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    Temporaries of `path` left by a killed job are removed first: only one job writes an output at a time, so any
    that exist now are stale (and a killed writer's finally never ran).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + "".join(path.suffixes)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{suffix}"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    # mkstemp makes owner-only files; results are shared, so give them the umask's usual mode
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_parquet(df: pd.DataFrame, path) -> None:
    """Write a table atomically; index dropped so files are byte-stable across runs."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_h5ad(adata: ad.AnnData, path) -> None:
    """Write an AnnData atomically (uncompressed: fast and deterministic)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def write_json(obj, path) -> None:
    """Write JSON atomically with sorted keys (deterministic)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def log_to(path) -> None:
    """Send this process's logging (INFO and up) and any uncaught error to a Snakemake log file."""
    import logging
    import sys

    logging.basicConfig(
        filename=str(path), level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
    )
    # warnings about the user's data also belong on the terminal, where Snakemake shows a job's stderr
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(logging.WARNING)
    terminal.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logging.getLogger().addHandler(terminal)
    default_hook = sys.excepthook

    def hook(kind, value, tb):
        # a failing rule's reason belongs in its log, where users (and --show-failed-logs) look for it
        logging.getLogger("pertcal").error("%s: %s", kind.__name__, value, exc_info=(kind, value, tb))
        default_hook(kind, value, tb)

    sys.excepthook = hook


def concat_tables(paths) -> pd.DataFrame:
    """Concatenate parquet tables and/or JSON objects (one row each) in the given order."""
    frames = []
    for path in map(str, paths):
        frames.append(pd.DataFrame([json.loads(Path(path).read_text())]) if path.endswith(".json") else pd.read_parquet(path))
    table = pd.concat(frames, ignore_index=True)
    # identifying column first (JSON objects come back with sorted keys)
    return table[["dataset", *table.columns.drop("dataset")]] if "dataset" in table else table
