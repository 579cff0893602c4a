"""Rule write_run_config: the configuration Snakemake resolved for this run, as YAML and as HTML for the report."""

import yaml

from pertcal.io import atomic_path, log_to
from pertcal.tables import config_html

log_to(snakemake.log[0])
text = yaml.safe_dump(dict(snakemake.params.config), sort_keys=False, allow_unicode=True)
with atomic_path(snakemake.output.yaml) as tmp:
    tmp.write_text(text, encoding="utf-8")
with atomic_path(snakemake.output.html) as tmp:
    tmp.write_text(config_html(text), encoding="utf-8")
