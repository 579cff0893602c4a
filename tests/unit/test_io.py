"""Atomic writers: a result appears whole or not at all, and a killed writer's temporaries do not pile up."""

import pandas as pd
import pytest

from pertcal.io import atomic_path, write_parquet


def test_stale_temporaries_of_an_output_are_removed_when_it_is_written_again(tmp_path):
    out = tmp_path / "processed.h5ad"
    stale = tmp_path / ".processed.h5ad.k1ll3d00.tmp.h5ad"  # the name atomic_path gave a job that was killed
    other = tmp_path / ".qc.json.k1ll3d00.tmp.json"  # another output's: its own next write cleans it
    stale.write_bytes(b"half")
    other.write_bytes(b"half")
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"whole")
    assert out.read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, out.name]


def test_failed_write_leaves_neither_output_nor_temporary(tmp_path):
    out = tmp_path / "t.parquet"
    with pytest.raises(ZeroDivisionError), atomic_path(out) as tmp:
        tmp.write_bytes(b"part")
        1 / 0
    assert list(tmp_path.iterdir()) == []
    write_parquet(pd.DataFrame({"a": [1]}), out)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
