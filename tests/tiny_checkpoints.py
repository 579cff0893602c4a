"""Tiny, randomly initialised stand-ins of the foundation-model files, written with the libraries' own classes and save
functions in the layout the published files have: what the embedding tests and the workflow test fetch and embed."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np

# ESM2's vocabulary, in its order (facebook/esm2_* vocab.txt).
ESM_VOCAB = ["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-", "<null_1>", "<mask>"]
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def esm2_checkpoint(directory: Path, *, hidden: int = 16, seed: int = 0) -> Path:
    """A 2-layer ESM2 (EsmForMaskedLM, as the hub's checkpoints) with its tokenizer files in `directory`."""
    import torch
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(ESM_VOCAB) + "\n")
    torch.manual_seed(seed)
    config = EsmConfig(
        vocab_size=len(ESM_VOCAB), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=64, position_embedding_type="rotary",
        pad_token_id=1, mask_token_id=32, token_dropout=True, emb_layer_norm_before=False,
    )  # fmt: skip
    EsmForMaskedLM(config).save_pretrained(directory)
    EsmTokenizer(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    special = {"cls_token": "<cls>", "eos_token": "<eos>", "mask_token": "<mask>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (directory / "special_tokens_map.json").write_text(json.dumps(special))
    return directory


def protein(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list(AMINO_ACIDS), size=length))


def proteome_fasta(path: Path, sequences: dict[str, str]) -> Path:
    """A UniProt-style FASTA (reviewed entries, GN= symbols), 60 residues per line."""
    lines = []
    for i, (gene, seq) in enumerate(sequences.items()):
        lines.append(f">sp|P{i:05d}|{gene}_HUMAN Protein {gene} OS=Homo sapiens OX=9606 GN={gene} PE=1 SV=1")
        lines += [seq[j : j + 60] for j in range(0, len(seq), 60)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def geneformer_checkpoint(directory: Path, genes: list[str], *, hidden: int = 8, seed: int = 0) -> dict[str, Path]:
    """A tiny BertForMaskedLM plus Geneformer's token dictionary (Ensembl ID → token) and symbol → Ensembl ID map."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tokens = {"<pad>": 0, "<mask>": 1, **{f"ENSG{i:011d}": i + 2 for i in range(len(genes))}}
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokens), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=32,
    )  # fmt: skip
    model_dir = directory / "Geneformer-V1-10M"
    BertForMaskedLM(config).save_pretrained(model_dir)
    files = {"config": model_dir / "config.json", "weights": model_dir / "model.safetensors"}
    files["token_dictionary"] = directory / "token_dictionary_gc30M.pkl"
    files["gene_name_id"] = directory / "gene_name_id_dict_gc30M.pkl"
    files["token_dictionary"].write_bytes(pickle.dumps(tokens))
    files["gene_name_id"].write_bytes(pickle.dumps({g: f"ENSG{i:011d}" for i, g in enumerate(genes)}))
    return files


def scgpt_checkpoint(directory: Path, genes: list[str], *, embsize: int = 8, seed: int = 0) -> dict[str, Path]:
    """A scGPT-shaped state dict (best_model.pt; gene encoder table `encoder.embedding.weight`), vocab.json, args.json."""
    import torch

    vocab = {"<pad>": 0, "<cls>": 1, "<eoc>": 2, **{g: i + 3 for i, g in enumerate(genes)}}
    torch.manual_seed(seed)
    encoder = torch.nn.Embedding(len(vocab), embsize, padding_idx=0)
    state = {
        "encoder.embedding.weight": encoder.weight.detach().clone(),
        "encoder.enc_norm.weight": torch.ones(embsize),
        "encoder.enc_norm.bias": torch.zeros(embsize),
        "value_encoder.linear1.weight": torch.randn(embsize, 1),
    }
    directory.mkdir(parents=True, exist_ok=True)
    files = {"weights": directory / "best_model.pt", "vocab": directory / "vocab.json", "args": directory / "args.json"}
    torch.save(state, files["weights"])
    files["vocab"].write_text(json.dumps(vocab))
    files["args"].write_text(json.dumps({"embsize": embsize, "nlayers": 1, "nheads": 2, "d_hid": embsize}))
    return files


GENEPT_MEMBER = "GenePT_gene_embedding_ada_text.pickle"


def genept_zip(path: Path, genes: list[str], *, dim: int = 12, seed: int = 0) -> Path:
    """The published archive's layout: a zip holding a pickled {symbol: list of floats}."""
    rng = np.random.default_rng(seed)
    table = {g: rng.standard_normal(dim).tolist() for g in genes}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"GenePT_emebdding_v2/{GENEPT_MEMBER}", pickle.dumps(table))
        zf.writestr("GenePT_emebdding_v2/NCBI_summary_of_genes.json", json.dumps({g: "" for g in genes}))
    return path
