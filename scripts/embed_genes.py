"""Rule embed_genes: resources/embeddings/{source}.parquet (gene symbol × dims, float32) from the source's local files."""

import json

import torch

from pertcal.embed import compute, embedding_table
from pertcal.io import log_to, write_parquet

log_to(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
files = {role: snakemake.input[role] for role in snakemake.params.files}
table = compute(snakemake.wildcards.source, files, json.loads(snakemake.params.embed), snakemake.params.device)
write_parquet(embedding_table(table), snakemake.output[0])
