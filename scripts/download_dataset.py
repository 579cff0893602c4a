"""Rule download_dataset: fetch resources/{dataset}/raw.h5ad from the dataset's mirror URLs, verified."""

import logging

from pertcal.download import fetch

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
urls = snakemake.params.urls
try:
    fetch(
        [urls] if isinstance(urls, str) else list(urls),
        snakemake.output[0],
        sha256=snakemake.params.sha256 or None,
        size=snakemake.params.size or None,
        dataset=snakemake.wildcards.dataset,
    )
except Exception:
    logging.exception("download_dataset failed")
    raise
