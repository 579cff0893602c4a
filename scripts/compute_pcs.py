"""Rule compute_pcs: loadings of the top principal components of the control-centred gt-half pseudobulk."""

from pertcal.io import log_to, read_rows, write_h5ad
from pertcal.spaces import pseudobulk_pcs

log_to(snakemake.log[0])
write_h5ad(pseudobulk_pcs(read_rows(snakemake.input[0], layers=("sum",)), n_components=snakemake.params.n_pcs),
           snakemake.output[0])
