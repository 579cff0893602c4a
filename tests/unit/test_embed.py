"""pertcal.embed on tiny randomly initialised checkpoints saved with the libraries' own classes: each table equals
what the library's model (or the raw state dict) gives when used directly, and nothing touches the network."""

import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

import tiny_checkpoints as tiny
from pertcal.embed import (
    OFFLINE_ENV,
    compute,
    coverage,
    esm2_embeddings,
    geneformer_embeddings,
    genept_embeddings,
    read_proteome,
    scgpt_embeddings,
)
from pertcal.io import PertcalInputError
from pertcal.summary import embedding_coverage

GENES = ["TP53", "MYC", "KRAS", "GATA1", "SPI1"]


@pytest.fixture(scope="module")
def esm_dir(tmp_path_factory):
    return tiny.esm2_checkpoint(tmp_path_factory.mktemp("esm") / "esm2_t33_650M_UR50D")


def _esm_reference(directory, seq):
    """Mean of the final-layer residue states of one window, straight from transformers (no pertcal code)."""
    from transformers import EsmModel, EsmTokenizer

    tok = EsmTokenizer.from_pretrained(directory)
    model = EsmModel.from_pretrained(directory, add_pooling_layer=False).eval()
    with torch.inference_mode():
        states = model(**tok([seq], return_tensors="pt")).last_hidden_state[0, 1:-1]
    return states.double()


def test_esm2_identical_proteins_get_identical_rows_and_different_ones_differ(esm_dir):
    rng = np.random.default_rng(1)
    shared, other = tiny.protein(rng, 40), tiny.protein(rng, 40)
    table = esm2_embeddings(esm_dir, {"A": shared, "B": shared, "C": other, "D": shared[:-1] + "W"})
    assert table.dtypes.eq(np.float32).all() and table.shape == (4, 16)
    np.testing.assert_array_equal(table.loc["A"], table.loc["B"])
    for g in ("C", "D"):  # a different protein, and one differing in a single residue
        assert np.abs(table.loc["A"] - table.loc[g]).max() > 1e-4
    assert (np.abs(table.to_numpy()).sum(axis=1) > 0).all()  # no silent zero rows
    np.testing.assert_allclose(table.loc["C"], _esm_reference(esm_dir, other).mean(0).numpy(), rtol=1e-5, atol=1e-6)
    assert all(os.environ[k] == v for k, v in OFFLINE_ENV.items())


def test_esm2_long_protein_is_the_residue_mean_over_near_equal_windows(esm_dir):
    seq = tiny.protein(np.random.default_rng(2), 25)
    table = esm2_embeddings(esm_dir, {"LONG": seq}, max_residues=10)  # 3 windows: bounds round(25·k/3)
    windows = [seq[:8], seq[8:17], seq[17:]]
    reference = torch.cat([_esm_reference(esm_dir, w) for w in windows]).mean(0).numpy()
    np.testing.assert_allclose(table.loc["LONG"], reference, rtol=1e-5, atol=1e-6)


def test_read_proteome_keeps_one_protein_per_gene(tmp_path):
    path = tmp_path / "p.fasta"
    path.write_text(
        ">tr|Q1|Q1_HUMAN x OS=Homo sapiens GN=AAA PE=1\nMKKKKKKKKKK\n"
        ">sp|P2|P2_HUMAN x OS=Homo sapiens GN=AAA PE=1\nMAA\n"  # reviewed beats a longer unreviewed entry
        ">sp|P3|P3_HUMAN x OS=Homo sapiens GN=BBB PE=1\nMCC\nDD\n"
        ">sp|P4|P4_HUMAN x OS=Homo sapiens GN=BBB PE=1\nMC\n"  # then the longest
        ">sp|P5|P5_HUMAN no gene name OS=Homo sapiens PE=1\nMEE\n"
    )
    assert read_proteome(path) == {"AAA": "MAA", "BBB": "MCCDD"}


def test_geneformer_rows_are_the_token_embeddings_of_each_symbols_ensembl_id(tmp_path):
    from safetensors.torch import load_file

    files = tiny.geneformer_checkpoint(tmp_path / "geneformer", GENES)
    names = pickle.loads(files["gene_name_id"].read_bytes())
    names["NOTOKEN"] = "ENSG99999999999"
    files["gene_name_id"].write_bytes(pickle.dumps(names))
    table = geneformer_embeddings(files["config"].parent, files["token_dictionary"], files["gene_name_id"])
    weight = load_file(files["weights"])["bert.embeddings.word_embeddings.weight"].numpy()
    tokens = pickle.loads(files["token_dictionary"].read_bytes())
    assert list(table.index) == sorted(GENES)
    for g in GENES:
        np.testing.assert_array_equal(table.loc[g], weight[tokens[names[g]]])


def test_scgpt_rows_are_the_gene_encoder_table_without_special_tokens(tmp_path):
    files = tiny.scgpt_checkpoint(tmp_path / "scgpt", GENES)
    table = scgpt_embeddings(files["weights"], files["vocab"], files["args"])
    weight = torch.load(files["weights"], weights_only=True)["encoder.embedding.weight"].numpy()
    assert list(table.index) == sorted(GENES)
    for i, g in enumerate(GENES):
        np.testing.assert_array_equal(table.loc[g], weight[i + 3])
    files["args"].write_text('{"embsize": 512}')
    with pytest.raises(PertcalInputError, match="embsize 512"):
        scgpt_embeddings(files["weights"], files["vocab"], files["args"])
    torch.save({"other": torch.zeros(2)}, files["weights"])
    with pytest.raises(PertcalInputError, match="encoder.embedding.weight"):
        scgpt_embeddings(files["weights"], files["vocab"], files["args"])


def test_genept_table_from_the_published_zip_or_its_pickle(tmp_path):
    archive = tiny.genept_zip(tmp_path / "genept.zip", GENES)
    table = genept_embeddings(archive, member=tiny.GENEPT_MEMBER)
    with __import__("zipfile").ZipFile(archive) as zf:
        raw = pickle.loads(zf.read(f"GenePT_emebdding_v2/{tiny.GENEPT_MEMBER}"))
    assert table.shape == (5, 12) and table.dtypes.eq(np.float32).all()
    np.testing.assert_allclose(table.loc["MYC"], np.float32(raw["MYC"]))
    plain = tmp_path / "genept.pickle"
    plain.write_bytes(pickle.dumps(raw))
    pd.testing.assert_frame_equal(genept_embeddings(plain), table)


def test_compute_refuses_missing_roles_and_split_checkpoints(tmp_path, esm_dir):
    with pytest.raises(PertcalInputError, match="lacks proteome"):
        compute("esm2", {"config": "a/config.json", "weights": "a/w", "vocab": "a/v"}, {})
    with pytest.raises(PertcalInputError, match="one directory"):
        compute("esm2", {"config": "a/config.json", "weights": "b/w", "vocab": "a/v", "proteome": "p"}, {})


def test_coverage_counts_perturbations_whose_every_target_has_a_row():
    perts = ["A", "B", "A+B", "A+Z", "Z"]
    assert coverage(perts, ["A", "B"]) == 3 / 5  # a combination needs both of its genes
    obs = pd.DataFrame({"perturbation": ["control", "A", "A", "A+Z", "Z"], "is_control": [True, False, False, False, False]})
    assert embedding_coverage(obs, {"esm2": pd.Index(["A"]), "genept": pd.Index(["A", "Z"])}) == {
        "coverage_esm2": 1 / 3,
        "coverage_genept": 1.0,
    }
