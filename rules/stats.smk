# Benchmark statistics: every method against the negative control (and the additive baseline for combos),
# paired by perturbation; mean ± SEM tables. Settings: config `stats:`.

STATS = config["stats"]
# the run's (dataset, task) pairs, and the reference sets each task's methods are compared against
DATASET_TASKS = [(ds, task) for ds in DATASETS for task in tasks_of(ds)]
COMPARISONS = {"single": ["negative_control"], "combo": ["negative_control"] + ["additive"] * ("additive" in config["baselines"])}


rule compute_stats:
    input:
        "results/{dataset}/metrics.parquet",
    output:
        "results/stats/{dataset}_{task}.parquet",
    params:
        seed=config["seed"],
        n_resamples=STATS["n_resamples"],
        confidence=STATS["confidence"],
    log:
        "logs/compute_stats/{dataset}_{task}.log",
    benchmark:
        "benchmarks/compute_stats/{dataset}_{task}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("compute_stats"),
    script:
        "../scripts/compute_stats.py"


rule collect_stats:
    input:
        [f"results/stats/{ds}_{task}.parquet" for ds, task in DATASET_TASKS],
    output:
        "results/stats/all.parquet",
    log:
        "logs/collect_stats/collect_stats.log",
    benchmark:
        "benchmarks/collect_stats/collect_stats.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("collect_stats"),
    script:
        "../scripts/collect_tables.py"


rule tabulate_metrics:
    input:
        "results/{dataset}/metrics.parquet",
    output:
        csv="results/tables/{dataset}_{task}.csv",
        md="results/tables/{dataset}_{task}.md",
        tex="results/tables/{dataset}_{task}.tex",
        html=report(
            "results/tables/{dataset}_{task}.html",
            caption="../report/table_metrics.rst",
            category="Benchmark",
            subcategory="{dataset} ({task})",
            labels={"dataset": "{dataset}", "task": "{task}", "result": "table: mean ± SEM"},
        ),
    log:
        "logs/tabulate_metrics/{dataset}_{task}.log",
    benchmark:
        "benchmarks/tabulate_metrics/{dataset}_{task}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("tabulate_metrics"),
    script:
        "../scripts/tabulate_metrics.py"
