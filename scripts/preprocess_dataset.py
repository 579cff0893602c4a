"""Rule preprocess_dataset: raw h5ad → processed.h5ad (harmonized, QC'd, normalized, capped, genes selected) + qc.json."""

from pertcal.io import atomic_path, log_to, write_json
from pertcal.qc import preprocess_file

log_to(snakemake.log[0])
p = snakemake.params
with atomic_path(snakemake.output.adata) as tmp:
    report = preprocess_file(
        snakemake.input[0], tmp, dataset=snakemake.wildcards.dataset, harmonize_params=p.harmonize,
        chunk_nonzeros=p.chunk_nonzeros, values=p.values, modality=p.modality, cell_line=p.cell_line,
        processing=p.processing, tasks=p.tasks, seed=p.seed,
    )
write_json(report, snakemake.output.qc)
