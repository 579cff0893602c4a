"""Rule verify_source: check a local source file against its declared sha256 before preprocessing reads it."""

from pertcal.download import verify_sha256
from pertcal.io import atomic_path, log_to

log_to(snakemake.log[0])
digest = verify_sha256(snakemake.input[0], snakemake.params.sha256, dataset=snakemake.wildcards.dataset)
with atomic_path(snakemake.output[0]) as tmp:
    tmp.write_text(f"{digest}  {snakemake.input[0]}\n")
