# Job shaping for a scheduler: rules that read only obs/small tables, or gather finished tables, run in the head
# process instead of queueing as SLURM jobs. Downloads too: compute nodes often have no route out.
# (Grouping of the many small prediction/scoring jobs is in profiles/slurm/config.yaml.)


localrules:
    download_dataset,
    split_halves,
    assign_folds,
    summarize_dataset,
    collect_summaries,
    collect_metrics,
    collect_drf,
    summarize_calibration,
