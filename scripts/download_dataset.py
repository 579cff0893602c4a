"""Rule download_dataset: fetch resources/{dataset}/raw.h5ad from the dataset's mirror URLs, verified to be an h5ad."""

from pertcal.download import fetch, h5ad_problem
from pertcal.io import log_to

log_to(snakemake.log[0])
fetch(
    list(snakemake.params.urls),
    snakemake.output[0],
    sha256=snakemake.params.sha256 or None,
    size=snakemake.params.size or None,
    dataset=snakemake.wildcards.dataset,
    check=h5ad_problem,
)
