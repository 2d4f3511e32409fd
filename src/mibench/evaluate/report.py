"""One self-contained HTML report (figures inlined as base64) over every benchmark's metrics."""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from mibench import __version__
from mibench.evaluate.figures import FIGURES
from mibench.evaluate.metrics import ALL, GROUP_COLUMNS, GROUPS, level_key, rank_estimators, ranking_caption
from mibench.io import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem} th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left} tr.best td{background:#eef8ee}
figure{margin:1rem 0} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:.85rem}
.meta{color:#666;font-size:.85rem} .err{color:#a00} code{background:#f4f4f4;padding:0 .2rem}
"""


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        return f"{value:.4g}"
    return html.escape(str(value))


def table_html(df: pl.DataFrame, best_first_row: bool = False) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = []
    for i, row in enumerate(df.iter_rows()):
        cls = ' class="best"' if best_first_row and i == 0 else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _pivot(metrics: pl.DataFrame, row: str, value: str, where: Mapping[str, object]) -> pl.DataFrame | None:
    sub = metrics
    for col in GROUP_COLUMNS:
        target = where.get(col, ALL)
        sub = sub.filter(pl.col(col) != ALL) if target == "*" else sub.filter(pl.col(col) == target)
    if sub.is_empty():
        return None
    return sub.pivot(on="estimator", index=row, values=value).sort(row)


def ranking_html(ranked: pl.DataFrame, levels: Sequence[float]) -> str:
    """The fair ranking (:func:`mibench.evaluate.metrics.rank_estimators`) as one table per group."""
    top = level_key(max(levels)) if levels else "95"
    parts = [f'<p class="meta">{html.escape(ranking_caption(ranked))}; estimators with failures ranked separately.</p>']
    for group in GROUPS:
        sub = ranked.filter(pl.col("group") == group)
        if sub.is_empty():
            continue
        view = sub.select(
            "rank",
            "estimator",
            pl.format("{} of {}", "scored", "cells").alias("scored"),
            "errors",
            "timeouts",
            "mse",
            "bias",
            "mae",
            "mre",
            *[c for c in (f"coverage_{top}", f"width_{top}") if c in sub.columns],
            "median_seconds",
        )
        if group != GROUPS[0]:
            own = [
                "–" if v is None else f"{v:.4g}" + ("" if same else " (own cells, not comparable)")
                for v, same in zip(sub["mse_own"].to_list(), sub["own_comparable"].to_list(), strict=True)
            ]
            view = view.with_columns(pl.Series("mse over own cells", own))
        title = {
            GROUPS[0]: "Ranking: estimators that scored every cell",
            GROUPS[1]: "Estimators with error or timeout cells (ranked separately)",
            GROUPS[2]: "Estimators without a single estimate",
        }[group]
        parts.append(f"<h3>{title}</h3>" + table_html(view, best_first_row=group == GROUPS[0]))
    return "\n".join(parts)


def benchmark_section(
    name: str,
    metrics: pl.DataFrame,
    estimates: pl.DataFrame | None,
    figures_dir: Path,
    levels: Sequence[float],
    estimators: Sequence[str] | None = None,
) -> str:
    """One benchmark: the fair ranking (from the estimates), per-bin and per-family tables, figures, failures."""
    parts = [f'<h2 id="{html.escape(name)}">Benchmark <code>{html.escape(name)}</code></h2>']
    if estimates is not None and not estimates.is_empty():
        ranked = rank_estimators(estimates, estimators, levels)
        parts.append(ranking_html(ranked, levels))
    else:
        parts.append('<p class="err">No estimates on disk: no ranking.</p>')
        ranked = None
    is_split = metrics.filter(pl.col("split") != ALL)["split"].unique().to_list() not in ([], ["-"])
    if is_split:
        for split in sorted(s for s in metrics["split"].unique().to_list() if s not in (ALL, "-")):
            pivot = _pivot(metrics, "n_bin", "mse", {"split": split, "n_bin": "*"})
            if pivot is not None:
                head = f"MSE per n-bin on <code>{html.escape(split)}</code> (each estimator's own scored cells)"
                parts.append(f"<h3>{head}</h3>" + table_html(pivot))
    else:
        pivot = _pivot(metrics, "n_bin", "mae", {"n_bin": "*"})
        if pivot is not None:
            parts.append("<h3>MAE per sample size (each estimator's own scored cells)</h3>" + table_html(pivot))
    pivot = _pivot(metrics, "family", "mse", {"family": "*"})
    if pivot is not None:
        parts.append("<h3>MSE per family (each estimator's own scored cells)</h3>" + table_html(pivot))
    cov_cols = [f"coverage_{level_key(v)}" for v in levels]
    with_cov = (
        ranked.select(["estimator", *[c for c in cov_cols if c in ranked.columns]]) if ranked is not None else None
    )
    if with_cov is not None and with_cov.width > 1:
        with_cov = with_cov.filter(pl.any_horizontal([pl.col(c).is_not_null() for c in with_cov.columns[1:]]))
        if not with_cov.is_empty():
            parts.append("<h3>Coverage of the true MI by central intervals (common cells)</h3>" + table_html(with_cov))
    for fig_name, caption in FIGURES.items():
        path = figures_dir / f"{fig_name}.png"
        if path.exists():
            parts.append(f"<figure>{_image(path)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    failures = failure_summary(estimates) if estimates is not None else None
    if failures is not None and not failures.is_empty():
        parts.append(
            '<h3 class="err">Failures (error and timeout cells, most frequent messages)</h3>' + table_html(failures)
        )
    return "\n".join(parts)


def failure_summary(estimates: pl.DataFrame, limit: int = 20) -> pl.DataFrame:
    bad = estimates.filter(pl.col("status") != "ok")
    if bad.is_empty():
        return bad.select("estimator", "status", "error").with_columns(pl.lit(0).alias("cells")).clear()
    return (
        bad.with_columns(pl.col("error").str.slice(0, 160))
        .group_by(["estimator", "status", "error"])
        .agg(pl.len().alias("cells"))
        .sort("cells", descending=True)
        .head(limit)
    )


def write_report(
    sections: Mapping[str, tuple],
    output: str | os.PathLike,
    title: str = "mibench report",
    provenance: Mapping[str, str] | None = None,
) -> Path:
    """``sections``: benchmark -> (metrics, estimates or None, figures dir, levels[, listed estimators]);
    ``provenance``: the config and commit the numbers reflect (stated under the title)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    toc = " · ".join(f'<a href="#{html.escape(n)}">{html.escape(n)}</a>' for n in sections)
    body = "\n".join(benchmark_section(n, *parts) for n, parts in sections.items())
    query = "mibench query \"SELECT estimator, family, mse, bias FROM metrics WHERE n_bin = 'ALL' AND split = 'ALL'\""
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="meta">mibench {html.escape(__version__)} · generated {stamp} · benchmarks: {toc}</p>
<p class="meta">Every number here is in <code>results/metrics/*.parquet</code>; query it with <code>{html.escape(query)}</code>.</p>
{provenance_line(provenance)}
{body}
</body></html>
"""
    return atomic_write_text(doc, output)


def provenance_line(provenance: Mapping[str, str] | None) -> str:
    """'Reflects config <fingerprint> (<files>) at commit <sha>' for the top of the report."""
    if not provenance:
        return ""
    sha = provenance.get("git_sha", "unknown")
    dirty = " <strong>with uncommitted changes</strong>" if sha.endswith("-dirty") else ""
    files = provenance.get("config_files") or "the config"
    return (
        f'<p class="meta">Reflects {html.escape(files)} (config fingerprint '
        f"<code>{html.escape(provenance.get('config_fingerprint', '?'))}</code>) at commit "
        f"<code>{html.escape(sha.removesuffix('-dirty')[:12])}</code>{dirty}.</p>"
    )


def report_from_disk(
    config: Any, results_dir: str | os.PathLike = "results", output: str | os.PathLike | None = None
) -> Path:
    """Build the report from the metrics, figures and planned estimates of every configured benchmark.

    Only the parts the config plans are read: results of benchmarks or estimators the config no longer
    names (``mibench clean --orphans``) never leak into it.
    """
    from mibench.benchmark import benchmark_plans
    from mibench.evaluate import schema_provenance
    from mibench.evaluate.parts import planned_parts, read_planned_estimates
    from mibench.layout import check_file, figures_dir, report_path, result_path

    root = Path(results_dir)
    sections = {}
    provenance: dict[str, str] = {}
    for name, plan in benchmark_plans(config).items():
        metrics_path = result_path("metrics", name, root)
        schema = check_file(metrics_path, "metrics")  # a stray there is named, not half-read
        metrics = pl.read_parquet(metrics_path)
        provenance = provenance or schema_provenance(schema)
        parts = [p for p in planned_parts(plan, root) if p.exists()]  # only planned parts, each checked
        estimates = read_planned_estimates(plan, parts) if parts else None
        sections[name] = (metrics, estimates, figures_dir(name, root), plan.levels, plan.estimators)
    return write_report(sections, output or report_path(root), provenance=provenance)
