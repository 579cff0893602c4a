"""Rule build_container: containers/{model}.sif from containers/{model}.def with `apptainer build`."""

from pertcal.containers import build_image
from pertcal.io import log_to

log_to(snakemake.log[0])
# the build context is the working directory (the repository root), which the recipes' %files name
build_image(snakemake.input.recipe, snakemake.output[0], context=".", log=snakemake.log[0])
