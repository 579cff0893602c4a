"""Sufficient statistics equal the means/variances computed directly from the processed cells."""

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertcal.reduce import half_means, pooled_means, reduce_file
from pertcal.split import split_halves


def test_reduce_matches_direct_computation_chunked_from_disk(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(["control", "A", "B", "A+B", "C"], [50, 17, 12, 23, 31])
    rng.shuffle(labels)
    x = sp.random(labels.size, 40, density=0.3, random_state=1, format="csr", dtype=np.float32)
    x.data = np.log1p(x.data * 50).astype(np.float32)
    a = ad.AnnData(x, obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(labels.size)]),
                   var=pd.DataFrame(index=[f"g{j}" for j in range(40)]))
    a.write_h5ad(tmp_path / "p.h5ad")
    halves = split_halves(a.obs["perturbation"], seed=3)
    stats = reduce_file(tmp_path / "p.h5ad", halves, dataset="d", chunk_nonzeros=97)  # many chunks

    dense = x.toarray().astype(np.float64)
    h = halves.set_index("cell").loc[a.obs_names]
    for key, row in stats.obs.iterrows():
        cells = (h["perturbation"] == row["perturbation"]).to_numpy() & (h["half"] == row["half"]).to_numpy()
        sub = dense[cells]
        assert row["n_cells"] == cells.sum()
        n = row["n_cells"]
        i = stats.obs_names.get_loc(key)
        np.testing.assert_allclose(stats.X[i], sub.mean(axis=0), atol=1e-6)
        var = (stats.layers["sumsq"][i] - stats.layers["sum"][i] ** 2 / n) / (n - 1)
        np.testing.assert_allclose(var, sub.var(axis=0, ddof=1), atol=1e-6)
    assert stats.obs["is_control"].sum() == 2

    pooled = pooled_means(stats)
    for pert in ["control", "A+B"]:
        np.testing.assert_allclose(pooled.loc[pert], dense[labels == pert].mean(axis=0), atol=1e-6)
    gt_cells = (h["half"] == "gt").to_numpy() & (labels == "C")
    np.testing.assert_allclose(half_means(stats, "gt").loc["C"], dense[gt_cells].mean(axis=0), atol=1e-6)
