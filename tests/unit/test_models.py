"""pertcal.models: the train/predict contract on simulated screens, determinism, parameter checks, offline GEARS,
and a model beating the mean baseline where the simulator puts learnable structure."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA

from pertcal.baselines import as_prediction, fold_data, mean
from pertcal import degs
from pertcal.evaluate import score_fold
from pertcal.io import write_h5ad, write_parquet
from pertcal.models import cli, embeddings, training
from pertcal.models.gears_model import gears_condition, random_gene2go
from pertcal.qc import preprocess_file
from pertcal.reduce import reduce_file
from pertcal.simulate import simulate_perturbseq
from pertcal.split import assign_folds_combo, assign_folds_single, split_halves

PROCESSING = dict(
    min_genes_per_cell=5, min_cells_per_gene=3, min_cells_per_perturbation=12, max_control_cells=8192, n_hvg=10_000,
    target_sum=1e4, min_cells_degs=4, deg_alpha=0.05, n_folds_single=5, n_folds_combo=2, val_fraction=0.1375,
    chunk_nonzeros=10**7, duplicate_genes="error",
)
HARMONIZE = dict(perturbation_column="perturbation", control_labels=["control"], combo_delimiter="+",
                 gene_symbol_column=None, harmonizers=[])
TINY_NET = {"epochs": 3, "batch_size": 64, "hidden_dim": 16, "latent_dim": 8, "val_every": 1}


def _screen(path, *, seed, **simulate):
    """Simulate, preprocess and split a screen into `path`; returns (processed AnnData, {task: folds})."""
    path.mkdir(parents=True, exist_ok=True)
    raw, _ = simulate_perturbseq(modality="CRISPRi", seed=seed, low_cell_fraction=0.0, **simulate)
    write_h5ad(raw, path / "raw.h5ad")
    preprocess_file(path / "raw.h5ad", path / "processed.h5ad", dataset="toy", harmonize_params=HARMONIZE,
                    chunk_nonzeros=PROCESSING["chunk_nonzeros"], values="counts", modality="CRISPRi", cell_line="sim",
                    processing=PROCESSING, tasks=["single"], seed=seed)
    adata = ad.read_h5ad(path / "processed.h5ad")
    perts = sorted(adata.obs["perturbation"].unique())
    folds = {"single": assign_folds_single([p for p in perts if "+" not in p], n_folds=5, val_fraction=0.2, seed=seed)}
    if any("+" in p for p in perts):
        folds["combo"] = assign_folds_combo(perts, seed=seed)
    for task, table in folds.items():
        write_parquet(table, path / f"folds_{task}.parquet")
    return adata, folds


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """A small screen with singles and combinations: 100 genes, 14 singles, 10 combos, ~20 cells each."""
    path = tmp_path_factory.mktemp("screen")
    adata, folds = _screen(path, seed=7, n_genes=100, n_perturbations=14, n_combos=10, cells_per_perturbation=20,
                           n_control_cells=60, mean_degs=15)
    return path, adata, folds


def _run(verb, path, task, *extra, fold=0, out=None):
    """`pertcal-model <verb>` on the screen in `path`; returns the exit code."""
    return cli.main([verb, "--data", str(path / "processed.h5ad"), "--folds", str(path / f"folds_{task}.parquet"),
                     "--fold", str(fold), "--task", task, "--device", "cpu", "--threads", "1", *extra,
                     "--out", str(out)])


def _train(path, task, model, params, out, fold=0):
    return _run("train", path, task, "--model", model, "--params", json.dumps(params), fold=fold, out=out)


def _test_perts(folds, task, fold=0):
    f = folds[task]
    return f[(f["fold"] == fold) & (f["split"] == "test")]["perturbation"].tolist()


def _train_means(adata, folds, task, fold=0):
    """(G,) mean over the fold's train perturbations of each one's mean expression, from the cells directly."""
    f = folds[task]
    train = f[(f["fold"] == fold) & (f["split"] == "train")]["perturbation"]
    x = adata.X.toarray().astype(np.float64)
    labels = adata.obs["perturbation"].to_numpy()
    return np.mean([x[labels == p].mean(axis=0) for p in train], axis=0)


@pytest.mark.parametrize(
    "model,task,embedding",
    [("fmlp", "single", "pca"), ("fmlp", "combo", "pca"), ("linear_additive", "single", "pca"),
     ("linear_additive", "combo", "random"), ("latent_additive", "combo", "pca"), ("decoder_only", "single", "pca")],
)
def test_train_and_predict_follow_the_contract(screen, tmp_path, model, task, embedding):
    path, adata, folds = screen
    params = {k: v for k, v in TINY_NET.items() if model != "linear_additive" or k not in ("hidden_dim", "latent_dim")}
    params["embedding"] = embedding
    ckpt, out = tmp_path / "ckpt", tmp_path / "pred.h5ad"
    assert _train(path, task, model, params, ckpt) == 0
    assert sorted(p.name for p in ckpt.iterdir()) == ["model.pt", "params.json", "training_curve.tsv"]
    curve = pd.read_csv(ckpt / "training_curve.tsv", sep="\t")
    assert curve.columns.tolist()[:4] == ["epoch", "train_loss", "val_loss", "selected"]
    assert curve["epoch"].tolist() == [1, 2, 3] and curve["selected"].sum() == 1
    assert np.isfinite(curve["train_loss"]).all() and np.isfinite(curve["val_loss"]).all()
    meta = json.loads((ckpt / "params.json").read_text())
    assert meta["params"]["epochs"] == 3 and meta["params"]["seed"] == 42 and meta["params"]["embedding"] == embedding
    assert (meta["model"], meta["dataset"], meta["task"], meta["fold"]) == (model, "toy", task, 0)

    assert _run("predict", path, task, "--checkpoint", str(ckpt), out=out) == 0
    pred = ad.read_h5ad(out)
    assert pred.obs_names.tolist() == _test_perts(folds, task)
    assert pred.obs["perturbation"].tolist() == _test_perts(folds, task)
    assert pred.var_names.tolist() == adata.var_names.tolist()
    assert isinstance(pred.X, np.ndarray) and pred.X.dtype == np.float64 and np.isfinite(pred.X).all()
    assert dict(pred.uns) == {"method": model, "dataset": "toy", "task": task, "fold": 0}


def test_training_and_prediction_are_deterministic(screen, tmp_path):
    path, _, _ = screen
    runs = []
    for k in range(2):
        ckpt, out = tmp_path / f"ckpt{k}", tmp_path / f"pred{k}.h5ad"
        assert _train(path, "single", "latent_additive", TINY_NET, ckpt) == 0
        assert _run("predict", path, "single", "--checkpoint", str(ckpt), out=out) == 0
        runs.append((ckpt, out))
    (a, pa), (b, pb) = runs
    assert (a / "training_curve.tsv").read_bytes() == (b / "training_curve.tsv").read_bytes()
    sa, sb = (torch.load(c / "model.pt", weights_only=True)["state_dict"] for c in (a, b))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert np.array_equal(ad.read_h5ad(pa).X, ad.read_h5ad(pb).X)


def _scripted_fit(val_losses, **options):
    """training.fit on a 1×1 linear layer whose bias is set to the epoch in every step, with two minibatches per
    epoch of mean losses 1 and 4 over 1 and 3 items, and `val_losses` returned by successive validations."""
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    calls, seen = [], []

    def step(batch):
        calls.append(batch)
        opt.step()  # no gradients: leaves the weights alone
        with torch.no_grad():
            net.bias.fill_((len(calls) + 1) // 2)  # the epoch: two steps per epoch
        return batch

    def validate():
        seen.append((net.training, torch.is_grad_enabled()))
        return val_losses[len(seen) - 1]

    params = {"epochs": 9, "val_every": 2, "lr_step": 3, "lr_gamma": 0.5}
    state, curve = training.fit(net, step, lambda: [(1.0, 1), (4.0, 3)], validate if val_losses else None, params,
                                optimizers=[opt], **options)
    return state, curve, opt.param_groups[0]["lr"], seen


def test_fit_validates_every_k_epochs_keeps_the_best_weights_and_stops_early():
    # validations at epochs 2, 4, 6, 8: best 1.0 at epoch 4, then 4 epochs without improvement = patience
    state, curve, lr, seen = _scripted_fit([3.0, 1.0, 2.0, 1.5, 0.5], patience=4)
    assert curve["epoch"].tolist() == list(range(1, 9))
    assert curve["train_loss"].tolist() == [(1.0 * 1 + 4.0 * 3) / 4] * 8  # weighted by the batches' sizes
    np.testing.assert_array_equal(curve["val_loss"], [np.nan, 3.0, np.nan, 1.0, np.nan, 2.0, np.nan, 1.5])
    assert curve.loc[curve["selected"], "epoch"].tolist() == [4] and state["bias"].item() == 4.0
    assert lr == 1.0 * 0.5 ** (8 // 3)  # StepLR(3, 0.5) stepped once per epoch
    assert seen == [(False, False)] * 4  # validation in eval mode, without gradients


def test_fit_without_validation_keeps_the_last_epoch_and_with_extra_columns_records_them():
    state, curve, _, _ = _scripted_fit([])
    assert curve["selected"].tolist() == [False] * 8 + [True] and state["bias"].item() == 9.0
    assert curve["val_loss"].isna().all()
    # no patience: every epoch runs; validations at 2, 4, 6, 8 and the last, 9
    _, curve, _, _ = _scripted_fit([(3.0, 30.0), (1.0, 10.0), (2.0, 20.0), (1.5, 15.0), (0.5, 5.0)],
                                   extra_columns=("val_mse",))
    assert curve.columns.tolist() == ["epoch", "train_loss", "val_loss", "selected", "val_mse"]
    np.testing.assert_array_equal(curve["val_mse"], [np.nan, 30, np.nan, 10, np.nan, 20, np.nan, 15, 5])
    assert curve.loc[curve["selected"], "epoch"].tolist() == [9]


@pytest.mark.parametrize(
    "params,field",
    [({"epochs": 2, "learning_rate": 0.1}, "learning_rate"), ({"epochs": "2"}, "epochs"), ({"epochs": True}, "epochs"),
     ({"batch_size": 0}, "batch_size"), ({"embedding": "esm2"}, "embedding"), ({"lr": -1.0}, "lr")],
)
def test_bad_hyperparameters_fail_before_training(screen, tmp_path, monkeypatch, capsys, params, field):
    path, _, _ = screen
    monkeypatch.setattr(cli, "load_fold", lambda *a, **k: pytest.fail("data read before the parameters were checked"))
    ckpt = tmp_path / "ckpt"
    assert _train(path, "single", "fmlp", params, ckpt) == 2
    err = capsys.readouterr().err
    assert "model 'fmlp'" in err and "dataset 'toy'" in err and "--params" in err and repr(field) in err
    assert not ckpt.exists()


def test_hyperparameters_from_a_file_are_named_in_errors(screen, tmp_path, capsys):
    path, _, _ = screen
    params = tmp_path / "fmlp.json"
    params.write_text(json.dumps({"epochz": 3}))
    assert _run("train", path, "single", "--model", "fmlp", "--params", str(params), out=tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert str(params) in err and "'epochz'" in err


@pytest.mark.parametrize(
    "params,message",
    [({"embedding_file": "nowhere/emb.tsv"}, "'embedding_file' names 'nowhere/emb.tsv', which does not exist"),
     ({"embedding": "file"}, "'embedding' is 'file' but 'embedding_file' is not set")],
)
def test_missing_embedding_file_fails_clearly(screen, tmp_path, capsys, params, message):
    path, _, _ = screen
    assert _train(path, "single", "decoder_only", params, tmp_path / "ckpt") == 2
    err = capsys.readouterr().err
    assert message in err and "model 'decoder_only'" in err and "dataset 'toy'" in err
    assert not (tmp_path / "ckpt").exists()


def test_embedding_file_is_used_and_unembedded_targets_get_the_mean_baseline(screen, tmp_path, caplog):
    path, adata, folds = screen
    test = _test_perts(folds, "single")
    rng = np.random.default_rng(0)
    genes = [g for g in adata.var_names if g != test[0]]  # the first test perturbation's target has no row
    table = pd.DataFrame(rng.standard_normal((len(genes), 4)), index=pd.Index(genes, name="gene"))
    table.to_csv(tmp_path / "emb.tsv", sep="\t")
    ckpt, out = tmp_path / "ckpt", tmp_path / "pred.h5ad"
    assert _train(path, "single", "fmlp", {**TINY_NET, "embedding_file": str(tmp_path / "emb.tsv")}, ckpt) == 0
    assert json.loads((ckpt / "params.json").read_text())["params"]["embedding"] == "file"
    assert torch.load(ckpt / "model.pt", weights_only=True)["embedding"].shape == (len(genes), 4)
    assert _run("predict", path, "single", "--checkpoint", str(ckpt), out=out) == 0
    pred = ad.read_h5ad(out)
    np.testing.assert_allclose(pred.X[0], _train_means(adata, folds, "single"), rtol=1e-6)
    assert not np.allclose(pred.X[1], pred.X[0])
    assert test[0] in caplog.text and "mean of the training perturbations" in caplog.text


def test_pca_embedding_is_the_principal_components_of_the_train_pseudobulk():
    rng = np.random.default_rng(3)
    pseudobulk = rng.normal(size=(12, 40)) @ np.diag(np.linspace(3, 0.1, 40))  # perturbations × genes
    emb = embeddings.pca_embedding(pseudobulk, pd.Index([f"g{i}" for i in range(40)]), 5)
    # sklearn: genes are the samples, after removing each gene's mean over perturbations
    y = pseudobulk.T - pseudobulk.T.mean(axis=1, keepdims=True)
    ref = PCA(n_components=5, svd_solver="full").fit_transform(y)
    for k in range(5):
        assert abs(np.corrcoef(emb.iloc[:, k], ref[:, k])[0, 1]) == pytest.approx(1.0, abs=1e-9)
    assert np.sqrt(np.mean(emb.to_numpy() ** 2)) == pytest.approx(1.0)
    # rank-limited: 3 perturbations give at most 2 centred components
    assert embeddings.pca_embedding(pseudobulk[:3], emb.index, 5).shape == (40, 2)


def test_fmlp_combo_encoding_and_prediction_use_every_target():
    # The published fMLP trained a combination on its first target's embedding only; pertcal sums all targets.
    from pertcal.models.fmlp import FMLP

    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(3, 4)), index=["A", "B", "C"])
    torch.manual_seed(0)
    net = FMLP(emb_dim=4, n_genes=6, hidden_dim=8, latent_dim=5, cell_mean=np.zeros(6))

    def predict(t):
        members, rows, ok = embeddings.encode(["A+B", "A", "B+A"], t)
        assert ok.all()
        with torch.no_grad():
            return net(torch.from_numpy(members), torch.from_numpy(rows)).numpy()

    before = predict(table)
    moved = table.copy()
    moved.loc["B"] += 1.0  # only the second target's embedding row changes
    after = predict(moved)
    assert not np.allclose(before[0], after[0])  # A+B follows B
    np.testing.assert_array_equal(before[1], after[1])  # A alone does not
    np.testing.assert_allclose(before[0], before[2], rtol=1e-6)  # and the order of targets does not matter
    # the combo's latent is the sum of both targets' latents (net: decoder(members @ encoder(rows)))
    members, rows, _ = embeddings.encode(["A+B"], table)
    with torch.no_grad():
        latents = net.encoder(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(members @ latents, latents.sum(axis=0, keepdims=True), rtol=1e-6)


def test_fmlp_training_encodes_train_combos_from_all_targets(screen, tmp_path, monkeypatch):
    path, _, folds = screen
    seen = {}
    encode = embeddings.encode

    def recording(perturbations, table):
        members, rows, ok = encode(perturbations, table)
        seen.update({p: int(m.sum()) for p, m in zip(perturbations, members)})
        return members, rows, ok

    monkeypatch.setattr(embeddings, "encode", recording)
    assert _train(path, "combo", "fmlp", {**TINY_NET, "epochs": 1}, tmp_path / "ckpt") == 0
    f = folds["combo"]
    train_combos = f[(f["fold"] == 0) & (f["split"] == "train") & f["perturbation"].str.contains("+", regex=False)]
    assert len(train_combos) and all(seen[p] == 2 for p in train_combos["perturbation"])


def test_gears_condition_names():
    assert [gears_condition(p) for p in ("control", "KLF1", "CEBPA+KLF1")] == ["ctrl", "KLF1+ctrl", "CEBPA+KLF1"]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _gene2go_without(path, genes, missing):
    """Write a random gene2go pickle covering `genes` except `missing`; returns its path."""
    gene2go = random_gene2go([g for g in genes if g != missing], n_terms=20, terms_per_gene=3, seed=0)
    with open(path, "wb") as f:
        pickle.dump(gene2go, f)
    return path


GEARS_TINY = {"epochs": 2, "hidden_size": 8, "batch_size": 16, "n_control_samples": 20}


def test_gears_trains_and_predicts_offline(screen, tmp_path, no_network, caplog):
    path, adata, folds = screen
    task = "combo"
    test = _test_perts(folds, task)
    missing = test[0].split("+")[0]  # GEARS cannot represent this gene: its perturbations fall back to the mean
    params = {**GEARS_TINY, "gene2go_path": str(_gene2go_without(tmp_path / "gene2go.pkl", adata.var_names, missing))}
    ckpt, out = tmp_path / "ckpt", tmp_path / "pred.h5ad"
    assert _train(path, task, "gears", params, ckpt) == 0
    curve = pd.read_csv(ckpt / "training_curve.tsv", sep="\t")
    assert curve["epoch"].tolist() == [1, 2] and curve["selected"].sum() == 1
    assert _run("predict", path, task, "--checkpoint", str(ckpt), out=out) == 0
    pred = ad.read_h5ad(out)
    assert pred.obs_names.tolist() == test and pred.var_names.tolist() == adata.var_names.tolist()
    assert pred.X.dtype == np.float64 and np.isfinite(pred.X).all()
    assert pred.uns["method"] == "gears"
    fallback = np.array([missing in p.split("+") for p in test])
    np.testing.assert_allclose(pred.X[fallback], np.tile(_train_means(adata, folds, task), (fallback.sum(), 1)),
                               rtol=1e-6)
    assert not np.allclose(pred.X[~fallback], _train_means(adata, folds, task))
    assert "outside the GO map" in caplog.text


def test_gears_is_deterministic_across_processes(screen, tmp_path):
    """A process with another hash seed trains identically (GEARS's own loss iterates a set of names)."""
    path, adata, _ = screen
    params = {**GEARS_TINY, "gene2go_path": str(_gene2go_without(tmp_path / "gene2go.pkl", adata.var_names, None))}
    args = ["train", "--model", "gears", "--data", str(path / "processed.h5ad"), "--folds",
            str(path / "folds_single.parquet"), "--fold", "1", "--task", "single", "--device", "cpu", "--threads", "1",
            "--params", json.dumps(params), "--out"]
    assert cli.main([*args, str(tmp_path / "here")]) == 0
    other_seed = str(int(os.environ.get("PYTHONHASHSEED", "0") or 0) + 1)
    subprocess.run([sys.executable, "-m", "pertcal.models.cli", *args, str(tmp_path / "there")],
                   env={**os.environ, "PYTHONHASHSEED": other_seed}, check=True, capture_output=True)
    for name in ("model.pt", "training_curve.tsv"):
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "there" / name).read_bytes()


def test_gears_is_imported_without_compiling_dcor():
    """A fresh process: cell-gears loads, dcor (its genetic-interaction analysis only) does not, and stays loadable."""
    code = ("import sys; from pertcal.models.gears_model import _import_gears; _import_gears(); "
            "import gears.utils as u; print('dcor' in sys.modules, u.distance_correlation.__module__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["False", "pertcal.models.gears_model"]


def test_gears_requires_a_gene2go_file(screen, tmp_path, capsys):
    path, _, _ = screen
    assert _train(path, "single", "gears", {"epochs": 1}, tmp_path / "c") == 2
    assert "'gene2go_path' is required" in capsys.readouterr().err
    assert _train(path, "single", "gears", {"gene2go_path": str(tmp_path / "none.pkl")}, tmp_path / "c") == 2
    assert "none.pkl" in capsys.readouterr().err


def test_gears_uncertainty_is_refused_on_cpu_with_the_fix(screen, tmp_path, capsys):
    """cell-gears's uncertainty loss accumulates into a leaf tensor, which autograd refuses on CPU: said, not crashed."""
    path, adata, _ = screen
    params = {**GEARS_TINY, "uncertainty": True,
              "gene2go_path": str(_gene2go_without(tmp_path / "gene2go.pkl", adata.var_names, None))}
    assert _train(path, "single", "gears", params, tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert "uncertainty: true trains on a GPU only" in err and "set uncertainty: false" in err
    assert not (tmp_path / "c" / "model.pt").exists()


def test_a_trained_model_beats_the_mean_baseline_on_wmse_and_nir(tmp_path):
    """Simulated singles act through a few shared programs, and a target gene sits in its program's core, so the
    target's PCA embedding tells which program an unseen perturbation drives: learnable by construction."""
    adata, folds = _screen(tmp_path, seed=3, n_genes=200, n_perturbations=50, cells_per_perturbation=30,
                           n_control_cells=150, mean_degs=60, effect_size=1.5, n_programs=3, private_fraction=0.0)
    halves = split_halves(adata.obs["perturbation"], seed=0)
    stats = reduce_file(tmp_path / "processed.h5ad", halves, dataset="toy", chunk_nonzeros=10**7)
    degs_gt = degs.test_degs(stats, "gt")
    scores = []
    for fold in (0, 1):
        ckpt, out = tmp_path / f"ckpt{fold}", tmp_path / f"pred{fold}.h5ad"
        assert _train(tmp_path, "single", "linear_additive", {"epochs": 40, "val_every": 5}, ckpt, fold=fold) == 0
        assert _run("predict", tmp_path, "single", "--checkpoint", str(ckpt), fold=fold, out=out) == 0
        d = fold_data(stats, folds["single"], fold, degs_td=None, modality="CRISPRi")
        baseline = as_prediction(mean(d), method="mean", dataset="toy", task="single", fold=fold)
        for method, prediction in (("linear_additive", ad.read_h5ad(out)), ("mean", baseline)):
            table = score_fold(prediction, stats, folds["single"], fold, degs_gt, deg_alpha=0.05)
            scores.append(table.assign(method=method, fold=fold))
    summary = pd.concat(scores).pivot_table(index="metric", columns="method", values="value", aggfunc="mean")
    assert summary.loc["wmse", "linear_additive"] < summary.loc["wmse", "mean"]
    assert summary.loc["nir", "linear_additive"] > summary.loc["nir", "mean"]
