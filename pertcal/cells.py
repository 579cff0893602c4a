"""Chunked, sparse access to the cells of an h5ad file: read obs/var alone, read X in row chunks, write X chunk by chunk.

Memory is bounded by one chunk (a budget of nonzeros), never by the number of cells: CSR files are sliced on
disk, dense files are read a block of rows at a time, and CSC files are first rewritten as CSR in row bands.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import read_elem, write_elem

from pertcal.io import PertcalInputError

log = logging.getLogger(__name__)

# ~0.2 GB of float32 data + int32 indices per chunk; stages hold a few chunk-sized temporaries at most.
CHUNK_NONZEROS = 25_000_000


def _where(dataset: str, path) -> str:
    return f"dataset {dataset!r}, file {path}"


def open_h5ad(path, *, dataset: str) -> h5py.File:
    """The file opened read-only; anything that is not an HDF5/AnnData file is refused in words."""
    path = Path(path)
    where = _where(dataset, path)
    if not path.exists():
        raise PertcalInputError(f"{where}: does not exist")
    if path.stat().st_size == 0:
        raise PertcalInputError(f"{where}: is empty (0 bytes): not an HDF5/AnnData file; download or copy it again")
    if not h5py.is_hdf5(path):
        raise PertcalInputError(f"{where}: not an HDF5/AnnData file (an .h5ad is HDF5); check the file and its source")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise PertcalInputError(f"{where}: cannot be opened as HDF5 ({err})") from None
    missing = [key for key in ("obs", "var", "X") if key not in f]
    if missing:
        f.close()
        raise PertcalInputError(f"{where}: not an AnnData file: lacks {', '.join(missing)}")
    return f


def read_part(path, key: str, *, dataset: str):
    """obs, var (DataFrames, string index) or uns (dict) of an h5ad, read alone: X and layers stay on disk."""
    with open_h5ad(path, dataset=dataset) as f:
        try:
            frame = read_elem(f[key])
        except Exception as err:  # any reader failure becomes one line naming the dataset, file and field
            raise PertcalInputError(f"{_where(dataset, path)}: {key} cannot be read ({type(err).__name__}: {err})") from None
    if isinstance(frame, pd.DataFrame):
        frame.index = frame.index.astype(str)
    return frame


class CellReader:
    """Row chunks of an h5ad's X as CSR float32 (cells × genes), validated as they are read."""

    def __init__(self, path, *, dataset: str, max_nonzeros: int = CHUNK_NONZEROS, scratch_dir=None):
        self.path, self.dataset, self.max_nonzeros = Path(path), dataset, int(max_nonzeros)
        self._scratch = None
        self._file = open_h5ad(path, dataset=dataset)
        x = self._file["X"]
        if isinstance(x, h5py.Dataset):
            if x.ndim != 2:
                self._fail(f"X is a {x.ndim}-dimensional array, not cells × genes")
            self.shape, self.format, self._x = tuple(int(s) for s in x.shape), "dense", x
            return
        kind = x.attrs.get("encoding-type", "")
        if kind not in ("csr_matrix", "csc_matrix"):
            self._fail(f"X has encoding {kind!r}; expected a CSR/CSC sparse matrix or a dense array")
        self.shape = tuple(int(s) for s in x.attrs["shape"])
        self.format = "csr"
        if kind == "csc_matrix":
            log.info("X is stored CSC: rewriting it as CSR in row bands before use")
            self._scratch = Path(scratch_dir or self.path.parent) / f".{self.path.name}.{os.getpid()}.csr.h5"
            csc_to_csr(x, self.shape, self._scratch, max_nonzeros=self.max_nonzeros, fail=self._fail)
            self._tmp = h5py.File(self._scratch, "r")
            x = self._tmp
        self._data, self._indices = x["data"], x["indices"]
        self.indptr = _checked_indptr(x["indptr"][:], self.shape[0], len(self._data), len(self._indices), self._fail)

    def _fail(self, what: str):
        raise PertcalInputError(f"{_where(self.dataset, self.path)}: {what}; the file is corrupt or not an AnnData X")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Close the file and remove any CSR scratch copy."""
        self._file.close()
        if self._scratch is not None:
            self._tmp.close()
            self._scratch.unlink(missing_ok=True)
            self._scratch = None

    def windows(self) -> list[tuple[int, int]]:
        """Consecutive row ranges [start, stop) holding at most max_nonzeros entries each (at least one row)."""
        n = self.shape[0]
        if self.format == "dense":
            step = max(1, self.max_nonzeros // max(self.shape[1], 1))
            return [(a, min(a + step, n)) for a in range(0, n, step)]
        return nonzero_blocks(self.indptr, self.max_nonzeros)

    def read(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows [start, stop) as CSR float32, structure checked (indices within the genes)."""
        try:
            if self.format == "dense":
                return sp.csr_matrix(np.asarray(self._x[start:stop], dtype=np.float32))
            a, b = int(self.indptr[start]), int(self.indptr[stop])
            data = np.asarray(self._data[a:b], dtype=np.float32)
            indices = np.asarray(self._indices[a:b])
        except OSError as err:
            self._fail(f"X rows {start}–{stop} cannot be read ({err})")
        if indices.size and (indices.min() < 0 or indices.max() >= self.shape[1]):
            self._fail(f"X/indices of rows {start}–{stop} fall outside the {self.shape[1]} genes")
        return sp.csr_matrix((data, indices, self.indptr[start : stop + 1] - a), shape=(stop - start, self.shape[1]))

    def chunks(self, rows: np.ndarray | None = None, *, label: str = "cells"):
        """Yield (row indices, CSR chunk of those rows) over the file in order; `rows` a bool mask selects rows."""
        progress = Progress(label, int(rows.sum()) if rows is not None else self.shape[0])
        for start, stop in self.windows():
            picked = np.arange(start, stop) if rows is None else start + np.flatnonzero(rows[start:stop])
            if picked.size == 0:
                continue
            x = self.read(start, stop)
            yield picked, (x if rows is None else x[picked - start])
            progress.advance(picked.size)


def _checked_indptr(indptr: np.ndarray, n_rows: int, n_data: int, n_indices: int, fail) -> np.ndarray:
    """indptr as int64 after checking it describes n_rows rows of a matrix with n_data stored entries."""
    indptr = np.asarray(indptr, dtype=np.int64)
    if indptr.shape != (n_rows + 1,):
        fail(f"X/indptr has {indptr.size} entries for {n_rows} rows (expected {n_rows + 1})")
    if n_data != n_indices:
        fail(f"X/data has {n_data} entries but X/indices {n_indices}")
    if indptr[0] != 0 or indptr[-1] != n_data:
        fail(f"X/indptr runs from {indptr[0]} to {indptr[-1]}, not from 0 to the {n_data} stored entries")
    if np.any(np.diff(indptr) < 0):
        fail("X/indptr is not monotone")
    return indptr


def csc_to_csr(group: h5py.Group, shape: tuple[int, int], out_path: Path, *, max_nonzeros: int, fail) -> None:
    """Rewrite a CSC X group as a CSR file at out_path, holding at most ~max_nonzeros entries in memory at once."""
    n_rows, n_cols = shape
    data, indices = group["data"], group["indices"]
    col_ptr = _checked_indptr(group["indptr"][:], n_cols, len(data), len(indices), fail)
    nnz = len(data)
    row_counts = np.zeros(n_rows, dtype=np.int64)
    for a in range(0, nnz, max_nonzeros):
        rows = np.asarray(indices[a : a + max_nonzeros], dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            fail(f"X/indices fall outside the {n_rows} cells")
        row_counts += np.bincount(rows, minlength=n_rows)
    row_ptr = np.concatenate([[0], np.cumsum(row_counts)])
    col_blocks = nonzero_blocks(col_ptr, max_nonzeros)
    row_bands = nonzero_blocks(row_ptr, max_nonzeros)
    with h5py.File(out_path, "w") as out:
        out_data = out.create_dataset("data", shape=(nnz,), dtype=np.float32)
        out_indices = out.create_dataset("indices", shape=(nnz,), dtype=_index_dtype(n_cols))
        out.create_dataset("indptr", data=row_ptr)
        # One full scan of the CSC entries per band of rows: memory stays one band, I/O grows with the bands.
        for r0, r1 in row_bands:
            rows_parts, cols_parts, vals_parts = [], [], []
            for c0, c1 in col_blocks:
                a, b = col_ptr[c0], col_ptr[c1]
                rows = np.asarray(indices[a:b], dtype=np.int64)
                keep = (rows >= r0) & (rows < r1)
                cols = np.repeat(np.arange(c0, c1), np.diff(col_ptr[c0 : c1 + 1]))
                rows_parts.append(rows[keep] - r0)
                cols_parts.append(cols[keep])
                vals_parts.append(np.asarray(data[a:b], dtype=np.float32)[keep])
            band = sp.csr_matrix(
                (np.concatenate(vals_parts), (np.concatenate(rows_parts), np.concatenate(cols_parts))),
                shape=(r1 - r0, n_cols),
            )
            band.sum_duplicates()
            band.sort_indices()
            out_data[row_ptr[r0] : row_ptr[r1]] = band.data
            out_indices[row_ptr[r0] : row_ptr[r1]] = band.indices


def nonzero_blocks(ptr: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive ranges [i, j) of the rows (or columns) described by `ptr`, each with ≤ budget entries (≥ 1 row)."""
    n, out, start = len(ptr) - 1, [], 0
    while start < n:
        stop = min(max(int(np.searchsorted(ptr, ptr[start] + budget, side="right")) - 1, start + 1), n)
        out.append((start, stop))
        start = stop
    return out


def _index_dtype(n: int):
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


class CsrWriter:
    """Write an h5ad whose X is CSR float32, appended row chunk by row chunk; obs, var and uns written up front."""

    def __init__(self, path, *, obs: pd.DataFrame, var: pd.DataFrame, uns: dict):
        self._file = h5py.File(path, "w")
        self._file.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        for key, value in (("obs", obs), ("var", var), ("uns", uns)):
            write_elem(self._file, key, value)
        for key in ("obsm", "varm", "obsp", "varp", "layers"):
            write_elem(self._file, key, {})
        self.shape = (len(obs), len(var))
        x = self._file.create_group("X")
        x.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": self.shape})
        self._data = x.create_dataset("data", shape=(0,), maxshape=(None,), dtype=np.float32, chunks=(1 << 20,))
        self._indices = x.create_dataset(
            "indices", shape=(0,), maxshape=(None,), dtype=_index_dtype(self.shape[1]), chunks=(1 << 20,)
        )
        self._x, self._indptr, self._rows = x, [np.zeros(1, dtype=np.int64)], 0

    def append(self, chunk: sp.csr_matrix) -> None:
        """Append rows (CSR, the file's genes as columns) after the rows written so far."""
        chunk = sp.csr_matrix(chunk, dtype=np.float32)
        if chunk.shape[1] != self.shape[1]:
            raise ValueError(f"chunk has {chunk.shape[1]} genes, the file {self.shape[1]}")
        chunk.sort_indices()
        n0, add = self._data.shape[0], chunk.nnz
        self._data.resize((n0 + add,))
        self._indices.resize((n0 + add,))
        self._data[n0:] = chunk.data
        self._indices[n0:] = chunk.indices
        self._indptr.append(chunk.indptr[1:].astype(np.int64) + n0)
        self._rows += chunk.shape[0]

    def close(self) -> None:
        """Write indptr and close; every row must have been appended."""
        if self._rows != self.shape[0]:
            raise ValueError(f"{self._rows} rows written, {self.shape[0]} declared")
        self._x.create_dataset("indptr", data=np.concatenate(self._indptr))
        self._file.close()


class Progress:
    """Log 'label: done / total (rate/s, ETA)' at most every `every` seconds."""

    def __init__(self, label: str, total: int, every: float = 30.0):
        self.label, self.total, self.every = label, total, every
        self.done, self.t0 = 0, time.monotonic()
        self._last = self.t0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every or self.done >= self.total:
            self._last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d / %d (%.0f/s, ETA %.0f s)", self.label, self.done, self.total, rate, eta)
