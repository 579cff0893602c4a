# Job shaping for a scheduler: rules that read only obs/small tables, or gather finished tables, run in the head
# process instead of queueing as SLURM jobs. Downloads too: compute nodes often have no route out.
# (Grouping of the many small prediction/scoring jobs is in profiles/slurm/config.yaml.)


localrules:
    download_dataset,
    fetch_resource,
    verify_source,
    split_halves,
    assign_folds,
    summarize_dataset,
    collect_summaries,
    collect_dataset_metrics,
    collect_metrics,
    collect_drf,
    summarize_calibration,
    plot_drf_heatmap,
    plot_drf_heatmap_techdup,
    plot_drf_mse_vs_wmse,
    plot_drf_vs_degs,
    plot_forest,
    plot_ideal_gap,
    plot_control_strips,
    collect_stats,
    tabulate_metrics,
    render_dataset_summary,
    write_run_config,
    benchmark,
