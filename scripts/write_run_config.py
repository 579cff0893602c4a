"""Rule write_run_config: the configuration Snakemake resolved for this run, as YAML and as HTML for the report."""

import yaml

from pertcal.io import atomic_path, log_to
from pertcal.tables import config_html


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-dicts (config.yaml's anchors) out in full: the page is read, not re-parsed."""

    def ignore_aliases(self, data):
        return True


log_to(snakemake.log[0])
text = yaml.dump(dict(snakemake.params.config), Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)
with atomic_path(snakemake.output.yaml) as tmp:
    tmp.write_text(text, encoding="utf-8")
with atomic_path(snakemake.output.html) as tmp:
    tmp.write_text(config_html(text), encoding="utf-8")
