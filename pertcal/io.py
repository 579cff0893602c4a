"""Atomic writers and validated readers for the files stages exchange (see docs/architecture.md)."""

from __future__ import annotations

import glob
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


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


@contextmanager
def parquet_writer(path, schema, *, statistics=()):
    """Yield a ParquetWriter whose tables become row groups of `path`, renamed into place only if the block succeeds.

    Dictionary columns are written dictionary-encoded, the rest plain; nothing compressed (random floats barely
    compress) and min/max statistics only for the `statistics` columns (a row-group filter on an identifying column;
    statistics of every column cost more than the rest of writing). No pandas or arrow schema in the footer, so
    readers get plain string columns.
    """
    names = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    with atomic_path(path) as tmp, pq.ParquetWriter(
        tmp, schema, use_dictionary=names, write_statistics=list(statistics), compression="none", store_schema=False
    ) as writer:
        yield writer


def write_h5ad(adata: ad.AnnData, path) -> None:
    """Write an AnnData atomically (uncompressed: fast and deterministic)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def read_rows(path, *, where: dict | None = None, layers=()) -> ad.AnnData:
    """Part of an h5ad: obs, var and uns whole, then only the rows whose obs columns take the `where` values
    (column → allowed values) of the listed dense `layers`, in file order; no X."""
    with h5py.File(path, "r") as f:
        obs, var = ad.io.read_elem(f["obs"]), ad.io.read_elem(f["var"])
        uns = ad.io.read_elem(f["uns"]) if "uns" in f else {}
        keep = np.ones(len(obs), dtype=bool)
        for column, values in (where or {}).items():
            if column not in obs:
                raise PertcalInputError(f"{path}: obs field '{column}' is missing")
            keep &= obs[column].astype(str).isin([str(v) for v in values]).to_numpy()
        rows = np.flatnonzero(keep)
        arrays = {name: _read_dense_rows(f, f"layers/{name}", rows, path) for name in layers}
    return ad.AnnData(obs=obs.iloc[rows], var=var, layers=arrays, uns=uns)


def _read_dense_rows(f: h5py.File, key: str, rows: np.ndarray, path, runs_per_read: int = 256) -> np.ndarray:
    """(len(rows), G) rows of a dense dataset: each read is one HDF5 selection, the union of up to `runs_per_read`
    runs of consecutive rows (few calls; HDF5's union grows quadratically with its runs, hence the cap)."""
    ds = f.get(key)
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 2:
        raise PertcalInputError(f"{path}: '{key}' is missing or not a dense matrix")
    out = np.empty((len(rows), ds.shape[1]), dtype=ds.dtype)
    starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)
    ends = np.r_[starts[1:], len(rows)]
    for first in range(0, len(starts), runs_per_read):
        space = ds.id.get_space()
        space.select_none()
        for a, b in zip(starts[first : first + runs_per_read], ends[first : first + runs_per_read]):
            space.select_hyperslab((int(rows[a]), 0), (int(b - a), ds.shape[1]), op=h5py.h5s.SELECT_OR)
        lo, hi = starts[first], ends[min(first + runs_per_read, len(starts)) - 1]
        ds.id.read(h5py.h5s.create_simple((hi - lo, ds.shape[1])), space, out[lo:hi])
    return out


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
