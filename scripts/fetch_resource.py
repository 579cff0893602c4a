"""Rule fetch_resource: download resources/external/{resource}, verified by its sha256 or pinned in the lock file."""

from pertcal.io import log_to
from pertcal.resources import fetch_resource

log_to(snakemake.log[0])
fetch_resource(
    snakemake.wildcards.resource,
    list(snakemake.params.urls),
    snakemake.output[0],
    sha256=snakemake.params.sha256 or None,
    size=snakemake.params.size or None,
    lock=snakemake.params.lock,
)
