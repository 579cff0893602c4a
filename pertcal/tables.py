"""Human-readable renderings of benchmark tables: mean ± SEM per method and metric (Markdown, LaTeX, HTML).

Input is pertcal.stats.summarize_methods' tidy table for one (dataset, task); rows of the rendering are methods
(canonical order), columns are metrics (registry order), the best non-duplicate method per metric in bold.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import pandas as pd

from pertcal.stats import POSITIVE_CONTROLS, order_methods

MISSING = "–"
POSITIVE_MARK = "†"
FOOTNOTE = (
    f"Mean ± SEM over test perturbations (all folds). Bold: best method per metric, excluding the positive "
    f"controls ({POSITIVE_MARK}: technical and interpolated duplicate). {MISSING}: not defined for this method."
)


def format_mean_sem(mean: float, sem: float) -> str:
    """'0.123 ± 0.0045' with three significant digits for the mean and two for the SEM."""
    if not np.isfinite(mean):
        return MISSING
    if not np.isfinite(sem):
        return f"{mean:.3g}"
    return f"{mean:.3g} ± {sem:.2g}"


def wide_cells(summary: pd.DataFrame, specs: Mapping) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(methods × metrics) formatted cells and the matching boolean is_best frame, for one (dataset, task)."""
    methods = order_methods(summary["method"].unique())
    metrics = [m for m in specs if m in set(summary["metric"])]
    text = summary.assign(cell=[format_mean_sem(m, s) for m, s in zip(summary["mean"], summary["sem"])])
    cells = text.pivot(index="method", columns="metric", values="cell").reindex(index=methods, columns=metrics)
    best = summary.pivot(index="method", columns="metric", values="is_best").reindex(index=methods, columns=metrics)
    return cells.fillna(MISSING), best.eq(True)


def _header(metric: str, spec, arrows: tuple[str, str]) -> str:
    return f"{metric} {arrows[0] if spec.higher_is_better else arrows[1]}"


def _method_label(method: str) -> str:
    return f"{method} {POSITIVE_MARK}" if method in POSITIVE_CONTROLS else method


def to_markdown(summary: pd.DataFrame, specs: Mapping, title: str) -> str:
    """A GitHub-flavoured Markdown table with a title line and footnote."""
    cells, best = wide_cells(summary, specs)
    header = ["method"] + [_header(m, specs[m], ("↑", "↓")) for m in cells.columns]
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, row in cells.iterrows():
        values = [f"**{v}**" if best.loc[method, m] else v for m, v in row.items()]
        lines.append("| " + " | ".join([_method_label(method)] + values) + " |")
    return "\n".join(lines + ["", FOOTNOTE, ""])


def _latex_escape(text: str) -> str:
    return text.replace("_", r"\_").replace("±", r"$\pm$").replace("†", r"$^\dagger$").replace("–", "--")


def to_latex(summary: pd.DataFrame, specs: Mapping, title: str) -> str:
    """A LaTeX table (booktabs, scaled to the text width with graphicx' \\resizebox)."""
    cells, best = wide_cells(summary, specs)
    header = ["method"] + [_header(m, specs[m], (r"$\uparrow$", r"$\downarrow$")) for m in cells.columns]
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{_latex_escape(title)}. {_latex_escape(FOOTNOTE)}}}",
        r"\resizebox{\textwidth}{!}{%",
        r"\begin{tabular}{l" + "r" * len(cells.columns) + "}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for method, row in cells.iterrows():
        values = [rf"\textbf{{{_latex_escape(v)}}}" if best.loc[method, m] else _latex_escape(v) for m, v in row.items()]
        lines.append(" & ".join([_latex_escape(_method_label(method))] + values) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


HTML_STYLE = (
    "body{font-family:sans-serif;font-size:13px;margin:1em}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}"
    "th:first-child,td:first-child{text-align:left}thead th{background:#eee}caption{font-weight:bold;margin:.5em}"
    "p.note{color:#444;max-width:60em}pre{background:#f6f6f6;padding:1em}"
)


def html_page(title: str, body: str) -> str:
    """A standalone HTML page (inline style, no external resources) around `body`."""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{HTML_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def html_table(header: list[str], rows: list[list[str]], bold: list[list[bool]] | None = None, caption: str = "") -> str:
    """An HTML table from already formatted strings; `bold` marks cells to emphasise."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        tds = "".join(
            f"<td><b>{html.escape(v)}</b></td>" if bold and bold[i][j] else f"<td>{html.escape(v)}</td>"
            for j, v in enumerate(row)
        )
        body.append(f"<tr>{tds}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"


def to_html(summary: pd.DataFrame, specs: Mapping, title: str) -> str:
    """A standalone HTML page with the mean ± SEM table (for the Snakemake report)."""
    cells, best = wide_cells(summary, specs)
    header = ["method"] + [_header(m, specs[m], ("↑", "↓")) for m in cells.columns]
    rows = [[_method_label(method)] + list(row) for method, row in cells.iterrows()]
    bold = [[False] + list(best.loc[method]) for method in cells.index]
    body = html_table(header, rows, bold, caption=title) + f'<p class="note">{html.escape(FOOTNOTE)}</p>'
    return html_page(title, body)


SUMMARY_ORDER = ["dataset", "n_cells", "n_genes", "n_perturbations", "n_combos", "n_control_cells", "cells_per_perturbation", "mean_degs"]


def dataset_summary_html(summary: pd.DataFrame) -> str:
    """The run's dataset summary (results/summary.csv) as a standalone HTML page, known columns first."""
    summary = summary[[c for c in SUMMARY_ORDER if c in summary] + [c for c in summary if c not in SUMMARY_ORDER]]
    fmt = {c: (lambda v: f"{v:,.1f}") for c in summary.select_dtypes("float").columns}
    # a dataset none of whose models reads that embedding has no coverage of it
    fmt.update({c: (lambda v: "–" if pd.isna(v) else f"{v:.1%}") for c in summary if c.startswith("coverage_")})
    rows = [[fmt.get(c, str)(v) for c, v in row.items()] for _, row in summary.iterrows()]
    note = (
        '<p class="note">One row per dataset after quality control: cells and genes kept, perturbations (combos '
        "included), mean cells per perturbation and mean number of DEGs per perturbation in the ground-truth half "
        "(BH-adjusted p below the dataset's deg_alpha). coverage_&lt;source&gt;: the share of the dataset's "
        "perturbations whose every target gene has a row in that gene embedding (the others get the mean "
        "baseline's prediction from models on it).</p>"
    )
    return html_page("Datasets", html_table(list(summary.columns), rows, caption="Datasets of this run") + note)


def config_html(config_yaml: str) -> str:
    """The run's effective configuration (YAML text) as a standalone HTML page."""
    body = (
        "<h3>Configuration of this run</h3><p class=\"note\">The configuration Snakemake resolved for this run "
        "(config.yaml merged with any --config/--configfile overrides).</p>"
        f"<pre>{html.escape(config_yaml)}</pre>"
    )
    return html_page("Configuration", body)


def trust_html(trust: pd.DataFrame, *, min_drf: float, alpha: float, confidence: float) -> str:
    """pertcal.calibration.trust_table as a standalone HTML page: one table per dataset, trusted metrics in bold."""
    header = ["metric", "panel", f"mean DRF [{confidence:.0%} CI]", "BDS (p)", "gamed by", "trust"]
    parts = []
    for dataset, t in trust.groupby("dataset", sort=True):
        rows, bold = [], []
        for r in t.itertuples(index=False):
            name = r.metric + (f" (≡ {r.drf_identical_to})" if isinstance(r.drf_identical_to, str) else "")
            drf = "censored" if r.censored else f"{r.mean_drf:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
            bds = f"{r.bds:.2f} (p={r.p_bds:.2g})" if np.isfinite(r.bds) else "n/a"
            rows.append([name, r.panel, drf, bds, r.gamed_by or "none", "yes" if r.trustworthy else "no"])
            bold.append([bool(r.trustworthy)] * len(header))
        parts.append(html_table(header, rows, bold, caption=dataset))
    note = (
        f'<p class="note">A metric is trusted on a dataset when the {confidence:.0%} bootstrap CI of its mean DRF '
        f"(positive control: interpolated duplicate; negative control: mean baseline) lies above {min_drf}, its BDS "
        f"(fraction of perturbations where the positive control beats the negative) has a sign-flip p below {alpha}, "
        "and no gaming predictor beats its negative control (one-sided paired Wilcoxon, Bonferroni over the "
        "predictors). ≡: DRF identical by algebra to the named metric; count the pair once.</p>"
    )
    return html_page("Which metrics to trust", "".join(parts) + note)
