"""Rule simulate_gene2go: a synthetic gene → GO-term map for a simulated dataset's genes (GEARS's offline input)."""

import pickle

from pertcal.cells import read_part
from pertcal.io import atomic_path, log_to
from pertcal.models.gears_model import random_gene2go

log_to(snakemake.log[0])
genes = read_part(snakemake.input[0], "var", dataset=snakemake.wildcards.dataset).index
gene2go = random_gene2go(genes, n_terms=snakemake.params.n_terms, terms_per_gene=snakemake.params.terms_per_gene,
                         seed=snakemake.params.seed)
with atomic_path(snakemake.output[0]) as tmp:
    tmp.write_bytes(pickle.dumps(gene2go, protocol=4))
