"""Rule preprocess_dataset: raw h5ad → processed.h5ad (harmonized, QC'd, normalized, capped, genes selected) + qc.json."""

import anndata as ad

from pertcal.harmonize import harmonize
from pertcal.io import log_to, write_h5ad, write_json
from pertcal.qc import preprocess

log_to(snakemake.log[0])
dataset, source = snakemake.wildcards.dataset, snakemake.input[0]
raw = harmonize(ad.read_h5ad(source), dataset=dataset, source=source, **snakemake.params.harmonize)
adata, report = preprocess(
    raw,
    dataset=dataset,
    source=source,
    values=snakemake.params.values,
    modality=snakemake.params.modality,
    cell_line=snakemake.params.cell_line,
    processing=snakemake.params.processing,
    seed=snakemake.params.seed,
)
write_h5ad(adata, snakemake.output.adata)
write_json(report, snakemake.output.qc)
