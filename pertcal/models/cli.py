"""`pertcal-model train|predict`: the one command every model container runs (docs/models.md has the contract).

train   --model NAME --data processed.h5ad --folds folds_{task}.parquet --fold K --task T --params JSON --out DIR
predict --checkpoint DIR --data processed.h5ad --folds folds_{task}.parquet --fold K --task T --out predictions.h5ad

The checkpoint directory holds `model.pt`, `training_curve.tsv` (epoch, train_loss, val_loss, selected, …) and
`params.json` (the resolved hyperparameters and what the model was trained on).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import anndata as ad
import h5py
import pandas as pd
import torch

import pertcal
from pertcal.baselines import as_prediction
from pertcal.io import PertcalInputError, write_h5ad, write_json
from pertcal.models.data import load_fold
from pertcal.models.params import context
from pertcal.models.registry import get_model
from pertcal.models.training import pick_device

log = logging.getLogger("pertcal.models")

CHECKPOINT = "model.pt"
CURVE = "training_curve.tsv"
META = "params.json"


def read_params(value: str) -> tuple[dict, str]:
    """Hyperparameters from a JSON file, or a JSON object given inline; returns (params, where they came from)."""
    if value.lstrip().startswith("{"):
        source, text = "--params (inline JSON)", value
    else:
        source = value
        try:
            text = Path(value).read_text()
        except OSError as exc:
            raise PertcalInputError(f"file {value}: cannot read hyperparameters: {exc}") from exc
    try:
        return json.loads(text), source
    except json.JSONDecodeError as exc:
        raise PertcalInputError(f"file {source}: hyperparameters are not valid JSON: {exc}") from exc


def dataset_of(path: str) -> str:
    """processed.h5ad's uns['dataset'], read without loading the matrix (so parameters are checked first)."""
    try:
        with h5py.File(path, "r") as f:
            value = f["uns/dataset"][()] if "uns/dataset" in f else None
    except OSError as exc:
        raise PertcalInputError(f"file {path}: not a readable h5ad: {exc}") from exc
    if value is None:
        raise PertcalInputError(f"file {path}: uns lacks the field 'dataset'")
    return value.decode() if isinstance(value, bytes) else str(value)


@contextmanager
def atomic_dir(path: Path):
    """Yield a temporary directory beside `path`; it replaces `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _read_inputs(data: str, folds: str, fold: int):
    adata = ad.read_h5ad(data)
    return load_fold(adata, pd.read_parquet(folds), fold, source=data, folds_source=folds)


def train(args) -> None:
    """Validate hyperparameters, then train on the fold and write the checkpoint directory."""
    spec = get_model(args.model)
    name = args.name or args.model
    given, source = read_params(args.params)
    dataset = dataset_of(args.data)
    params = spec.validate(given, model=name, dataset=dataset, source=source)
    device = pick_device(args.device)
    fold = _read_inputs(args.data, args.folds, args.fold)
    log.info("training %s (%s) on %s %s fold %d: %d cells, %d genes, device %s", name, args.model, dataset,
             args.task, args.fold, fold.x.shape[0], fold.genes.size, device)
    checkpoint, curve = spec.train(fold, params, device, where=context(name, dataset, source))
    meta = {"model": args.model, "name": name, "dataset": dataset, "task": args.task, "fold": args.fold,
            "params": params, "selected_epoch": int(curve.loc[curve["selected"], "epoch"].iloc[0]),
            "device": str(device), "pertcal_version": pertcal.__version__, "torch_version": torch.__version__}
    with atomic_dir(Path(args.out)) as tmp:
        torch.save(checkpoint, tmp / CHECKPOINT)
        curve.to_csv(tmp / CURVE, sep="\t", index=False)
        write_json(meta, tmp / META)


def predict(args) -> None:
    """Predict the fold's test perturbations from a checkpoint and write the predictions h5ad."""
    ckpt = Path(args.checkpoint)
    try:
        meta = json.loads((ckpt / META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PertcalInputError(f"file {ckpt / META}: not a pertcal-model checkpoint: {exc}") from exc
    if (meta["task"], meta["fold"]) != (args.task, args.fold):
        raise PertcalInputError(
            f"file {ckpt / META}: checkpoint was trained on task {meta['task']} fold {meta['fold']}, "
            f"not task {args.task} fold {args.fold}"
        )
    spec = get_model(meta["model"])
    device = pick_device(args.device)
    fold = _read_inputs(args.data, args.folds, args.fold)
    checkpoint = torch.load(ckpt / CHECKPOINT, map_location=device, weights_only=True)
    if checkpoint["genes"] != fold.genes.tolist():
        raise PertcalInputError(f"file {args.data}: var genes differ from those {ckpt} was trained on")
    pred = spec.predict(checkpoint, fold, meta["params"], device)
    out = as_prediction(pred, method=meta["name"], dataset=fold.dataset, task=args.task, fold=args.fold)
    write_h5ad(out, args.out)
    log.info("wrote %d test perturbations × %d genes to %s", out.n_obs, out.n_vars, args.out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pertcal-model", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb in ("train", "predict"):
        p = verbs.add_parser(verb)
        if verb == "train":
            p.add_argument("--model", required=True, help="implementation: fmlp, linear_additive, latent_additive, "
                                                         "decoder_only, gears, scgpt, sclambda or presage")
            p.add_argument("--name", help="method name written into predictions (default: --model)")
            p.add_argument("--params", default="{}", help="hyperparameters: a JSON file or an inline JSON object")
        else:
            p.add_argument("--checkpoint", required=True, help="directory written by `train`")
        p.add_argument("--data", required=True, help="processed.h5ad")
        p.add_argument("--folds", required=True, help="folds_{task}.parquet")
        p.add_argument("--fold", required=True, type=int)
        p.add_argument("--task", required=True, choices=["single", "combo"])
        p.add_argument("--out", required=True)
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    # cuBLAS needs this before CUDA starts for deterministic matrix products on GPU
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        (train if args.verb == "train" else predict)(args)
    except PertcalInputError as exc:
        log.error("%s", exc)
        print(f"pertcal-model {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
