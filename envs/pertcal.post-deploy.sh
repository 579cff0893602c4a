#!/usr/bin/env bash
# Snakemake runs this once inside each freshly created env (models.* and gears.* link here) to add this
# repository's pertcal package; the env file already pins its dependencies. Snakemake copies the script
# before running it, so the source tree is the working directory unless PERTCAL_SOURCE names it.
set -euo pipefail
src="${PERTCAL_SOURCE:-$PWD}"
if [ ! -f "$src/pyproject.toml" ] || [ ! -d "$src/pertcal" ]; then
  echo "post-deploy: no pertcal source tree at '$src': run snakemake from the repository root or set PERTCAL_SOURCE" >&2
  exit 1
fi
python -m pip install --no-deps --no-build-isolation "$src"
