"""Rule convert_container: containers/docker/{model}.Dockerfile from containers/{model}.def (spython)."""

from pertcal.containers import to_dockerfile
from pertcal.io import atomic_path, log_to

log_to(snakemake.log[0])
text = to_dockerfile(snakemake.input[0])
with atomic_path(snakemake.output[0]) as tmp:
    tmp.write_text(text)
