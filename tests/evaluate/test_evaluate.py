"""Metrics, calibration, figures, report, SQL views and MLflow logging on hand-made estimates."""

from __future__ import annotations

import json

import polars as pl
import pyarrow.parquet as pq
import pytest

from mibench.evaluate import compute_calibration, compute_metrics, rank_estimators, ranking_caption
from mibench.evaluate.figures import FIGURES, make_figures
from mibench.evaluate.report import failure_summary, write_report
from mibench.io import atomic_write_table
from mibench.layout import ESTIMATES_SCHEMA
from mibench.query import QueryError, run_query


def _row(
    estimator, true, est, n=100, family="multinormal", status="ok", quantiles=None, ci=None, seconds=1.0, split=None
):
    base = {f.name: None for f in ESTIMATES_SCHEMA}
    base.update(
        benchmark="b",
        estimator=estimator,
        estimator_params="{}",
        sample_id=f"{estimator}-{true}-{est}-{n}",
        task="t",
        split=split,
        family=family,
        structure="dense",
        transform="base",
        task_params="{}",
        dim_x=1,
        dim_y=1,
        n=n,
        seed=0,
        mi_true=true,
        mi_estimate=est if status == "ok" else None,
        seconds=seconds,
        device="cpu",
        status=status,
        error=None if status == "ok" else "boom",
        extras="{}",
        mibench_version="0",
        git_sha="x",
    )
    if quantiles is not None:
        base["quantiles"] = [{"tau": t, "value": v} for t, v in quantiles.items()]
    if ci is not None:
        base["ci_low"], base["ci_high"], base["ci_level"] = ci
    return base


def _frame(rows) -> pl.DataFrame:
    import pyarrow as pa

    return pl.from_arrow(pa.Table.from_pylist(rows, schema=ESTIMATES_SCHEMA))


@pytest.fixture
def estimates() -> pl.DataFrame:
    q = lambda lo, mid, hi: {0.025: lo, 0.25: (lo + mid) / 2, 0.5: mid, 0.75: (mid + hi) / 2, 0.975: hi}  # noqa: E731
    rows = [
        # estimator a: errors +0.1, -0.3 (n=100) and +0.2 (n=1000); 95% intervals: covers, misses, covers
        _row("a", 1.0, 1.1, quantiles=q(0.9, 1.1, 1.3)),
        _row("a", 2.0, 1.7, quantiles=q(1.6, 1.7, 1.9)),
        _row("a", 0.5, 0.7, n=1000, family="student", quantiles=q(0.4, 0.7, 0.8), seconds=3.0),
        _row("a", 1.0, None, status="error"),
        # estimator b: native 90% intervals only, one timeout
        _row("b", 1.0, 1.0, ci=(0.5, 1.5, 0.9)),
        _row("b", 2.0, 2.5, ci=(2.1, 2.9, 0.9)),
        _row("b", 0.5, 0.5, n=1000, family="student", ci=(0.4, 0.6, 0.9)),
        _row("b", 1.0, None, status="timeout"),
    ]
    return _frame(rows)


def overall(metrics: pl.DataFrame, estimator: str) -> dict:
    sub = metrics.filter(
        (pl.col("estimator") == estimator)
        & (pl.col("family") == "ALL")
        & (pl.col("n_bin") == "ALL")
        & (pl.col("split") == "ALL")
        & (pl.col("dim_bin") == "ALL")
    )
    assert sub.height == 1
    return sub.row(0, named=True)


def test_metrics_by_hand(estimates) -> None:
    m = compute_metrics(estimates, levels=(0.5, 0.9, 0.95))
    a = overall(m, "a")
    assert a["count"] == 3 and a["errors"] == 1 and a["timeouts"] == 0
    assert a["mse"] == pytest.approx((0.01 + 0.09 + 0.04) / 3)
    assert a["bias"] == pytest.approx((0.1 - 0.3 + 0.2) / 3, abs=1e-12)
    assert a["mae"] == pytest.approx(0.2)
    assert a["mre"] == pytest.approx((0.1 / 1 + 0.3 / 2 + 0.2 / 0.5) / 3)
    assert a["coverage_95"] == pytest.approx(2 / 3)  # [0.9,1.3]∋1, [1.6,1.9]∌2, [0.4,0.8]∋0.5
    assert a["width_95"] == pytest.approx((0.4 + 0.3 + 0.4) / 3)
    assert a["coverage_90"] is None  # no 0.05/0.95 quantiles, no native 90% interval
    assert a["median_seconds"] == pytest.approx(1.0)
    b = overall(m, "b")
    assert b["count"] == 3 and b["errors"] == 1 and b["timeouts"] == 1
    assert b["coverage_90"] == pytest.approx(2 / 3) and b["coverage_95"] is None
    by_n = m.filter(
        (pl.col("estimator") == "a")
        & (pl.col("n_bin") != "ALL")
        & (pl.col("family") == "ALL")
        & (pl.col("split") == "ALL")
        & (pl.col("dim_bin") == "ALL")
    )
    assert dict(zip(by_n["n_bin"], by_n["mse"], strict=True)) == pytest.approx({"100": 0.05, "1000": 0.04})
    fam = m.filter(
        (pl.col("estimator") == "a")
        & (pl.col("family") == "student")
        & (pl.col("n_bin") == "ALL")
        & (pl.col("split") == "ALL")
    )
    assert fam["mse"][0] == pytest.approx(0.04)


def _cells(estimator: str, outcomes: dict[str, float | str]) -> list[dict]:
    """Rows of one estimator on shared cells c1..c4 (truths 1, 2, 0.5, 1.5): an error to add, or a status."""
    truths = {"c1": 1.0, "c2": 2.0, "c3": 0.5, "c4": 1.5}
    rows = []
    for cell, outcome in outcomes.items():
        status = outcome if isinstance(outcome, str) else "ok"
        est = truths[cell] + outcome if status == "ok" else None
        row = _row(estimator, truths[cell], est, status=status)
        row["sample_id"] = cell
        rows.append(row)
    return rows


@pytest.fixture
def uneven() -> pl.DataFrame:
    """'hist' scores 2 of 4 cells, perfectly: ranked on its own cells it would lead (issue 11)."""
    return _frame(
        _cells("full", {"c1": 0.1, "c2": -0.1, "c3": 0.2, "c4": 0.0})
        + _cells("full2", {"c1": 0.3, "c2": 0.3, "c3": 0.3, "c4": 0.3})
        + _cells("hist", {"c1": 0.0, "c2": 0.0, "c3": "error", "c4": "timeout"})
        + _cells("other", {"c1": 0.2, "c2": 0.2, "c3": 0.5, "c4": "error"})
        + _cells("dead", dict.fromkeys(("c1", "c2", "c3", "c4"), "error"))
    )


def test_ranking_compares_estimators_on_the_cells_all_of_them_scored(uneven) -> None:
    r = rank_estimators(uneven, levels=(0.95,))
    by = {row["estimator"]: row for row in r.iter_rows(named=True)}
    assert r["estimator"].to_list() == ["full", "full2", "hist", "other", "dead"]
    assert [(by[e]["group"], by[e]["rank"]) for e in by] == [
        ("complete", 1),
        ("complete", 2),
        ("with failures", 1),
        ("with failures", 2),
        ("no estimates", None),
    ]
    assert set(r["common_cells"].to_list()) == {2} and set(r["cells"].to_list()) == {4}  # c1, c2
    assert [by[e]["scored"] for e in ("full", "hist", "other", "dead")] == [4, 2, 3, 0]
    assert by["full"]["mse"] == pytest.approx(0.01) and by["full2"]["mse"] == pytest.approx(0.09)
    assert by["hist"]["mse"] == pytest.approx(0.0) and by["other"]["mse"] == pytest.approx(0.04)
    assert by["full"]["mse_own"] == pytest.approx(0.015)  # over all 4 cells: not what it is ranked by
    assert by["other"]["mse_own"] == pytest.approx((0.04 + 0.04 + 0.25) / 3) and not by["other"]["own_comparable"]
    assert by["full"]["own_comparable"] and not by["hist"]["own_comparable"] and by["dead"]["mse"] is None
    assert (by["hist"]["errors"], by["hist"]["timeouts"]) == (1, 1)
    assert ranking_caption(r) == "ranked by MSE on the 2 cells every estimator with estimates scored (of 4)"
    assert ranking_caption(rank_estimators(uneven, ["full", "hist"])) == (
        "ranked by MSE on the 2 cells every listed estimator scored (of 4)"
    )
    # listing only the complete estimators compares them on all 4 cells
    both = rank_estimators(uneven, ["full2", "full"])
    assert both["estimator"].to_list() == ["full", "full2"] and both["mse"][0] == pytest.approx(0.015)
    assert ranking_caption(both) == "ranked by MSE on all 4 cells (every listed estimator scored every cell)"


def test_coverage_50_uses_quartiles(estimates) -> None:
    # a's 50% intervals: [1.0,1.1]∋1.0 (closed), [1.65,1.7]∌2.0, [0.55,0.7]∌0.5 → 1/3
    a = overall(compute_metrics(estimates, levels=(0.5,)), "a")
    assert a["coverage_50"] == pytest.approx(1 / 3)


def test_n_bins_with_edges(estimates) -> None:
    m = compute_metrics(estimates, levels=(0.95,), n_bins=(10, 300, 1000))
    assert set(m["n_bin"].to_list()) == {"ALL", "[10,300)", "[300,1000]"}


def test_right_closed_n_bins_are_the_mist_papers(estimates) -> None:
    from mibench.benchmark import bin_label

    edges = (10, 100, 300, 500)
    labels = [bin_label(n, edges, closed="right") for n in (9, 10, 100, 101, 300, 301, 500, 501)]
    assert labels == ["other", "[10,100]", "[10,100]", "(100,300]", "(100,300]", "(300,500]", "(300,500]", "other"]
    assert [bin_label(n, edges) for n in (10, 100, 500)] == ["[10,100)", "[100,300)", "[300,500]"]  # default: [a, b)
    with pytest.raises(ValueError, match="closed must be"):
        bin_label(10, edges, closed="both")
    left = compute_metrics(estimates, levels=(0.95,), n_bins=(10, 300, 1000))
    right = compute_metrics(estimates, levels=(0.95,), n_bins=(10, 300, 1000), n_closed="right")
    assert set(right["n_bin"].to_list()) == {"ALL", "[10,300]", "(300,1000]"}
    overall_rows = (pl.col("n_bin") == "ALL") & (pl.col("split") == "ALL") & (pl.col("family") == "ALL")
    assert right.filter(overall_rows)["mse"].to_list() == left.filter(overall_rows)["mse"].to_list()


def test_calibration_fractions(estimates) -> None:
    cal = compute_calibration(estimates).filter(pl.col("group") == "ALL")
    a = dict(
        zip(
            cal.filter(pl.col("estimator") == "a")["tau"],
            cal.filter(pl.col("estimator") == "a")["fraction"],
            strict=True,
        )
    )
    # true ≤ q_0.5 ? 1.0≤1.1 yes, 2.0≤1.7 no, 0.5≤0.7 yes
    assert a[0.5] == pytest.approx(2 / 3) and a[0.025] == pytest.approx(0.0) and a[0.975] == pytest.approx(2 / 3)
    assert cal.filter(pl.col("estimator") == "b").is_empty()  # no quantiles, no calibration


def test_figures_and_report(estimates, tmp_path) -> None:
    levels = (0.5, 0.9, 0.95)
    paths = make_figures(estimates, compute_calibration(estimates), levels, tmp_path / "fig")
    assert set(paths) == set(FIGURES)
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = compute_metrics(estimates, levels)
    html = write_report({"b": (metrics, estimates, tmp_path / "fig", levels)}, tmp_path / "index.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES)  # self-contained
    assert "Estimators with error or timeout cells (ranked separately)" in html
    assert "Failures" in html and "boom" in html
    assert not failure_summary(estimates).is_empty()


def test_report_ranks_on_common_cells(uneven, tmp_path) -> None:
    metrics = compute_metrics(uneven, (0.95,))
    html = write_report({"u": (metrics, uneven, tmp_path, (0.95,))}, tmp_path / "index.html").read_text()
    assert "ranked by MSE on the 2 cells every estimator with estimates scored (of 4)" in html
    assert '<tr class="best"><td>1</td><td>full</td><td>4 of 4</td>' in html
    assert "<td>hist</td><td>2 of 4</td>" in html and "(own cells, not comparable)" in html
    assert html.index("<td>full2</td>") < html.index("<td>hist</td>"), "failing estimators come after, separately"


def test_query_views_and_read_only(estimates, tmp_path) -> None:
    results = tmp_path / "results"
    with pytest.raises(QueryError, match="no results folder at .*run the workflow first"):
        run_query("SELECT 1", results)
    (results / "logs").mkdir(parents=True)
    with pytest.raises(QueryError, match="holds no results yet"):
        run_query("SELECT 1", results)
    metrics = compute_metrics(estimates, (0.95,))
    atomic_write_table(metrics.to_arrow(), results / "metrics" / "b.parquet")
    # views without files yet exist with their columns
    assert run_query("SELECT count(*) AS c FROM estimates", results).to_pylist() == [{"c": 0}]
    assert "mi_true" in run_query("SELECT * FROM estimates", results).column_names
    atomic_write_table(estimates.to_arrow(), results / "estimates" / "b" / "a" / "part-0000.parquet")
    got = run_query(
        "SELECT estimator, count(*) AS c FROM estimates WHERE status = 'ok' GROUP BY 1 ORDER BY 1", results
    ).to_pylist()
    assert got == [{"estimator": "a", "c": 3}, {"estimator": "b", "c": 3}]
    best = run_query(
        "SELECT estimator FROM metrics WHERE family='ALL' AND n_bin='ALL' AND split='ALL' AND dim_bin='ALL' ORDER BY mse LIMIT 1",
        results,
    )
    assert best.to_pylist() == [{"estimator": "a"}]
    before = sorted(p.name for p in results.rglob("*"))
    for sql in (
        "COPY estimates TO 'out.csv'",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO x VALUES (1)",
        "ATTACH 'x.db'",
    ):
        with pytest.raises(QueryError, match="only read statements"):
            run_query(sql, results)
    with pytest.raises(QueryError, match="does not parse"):
        run_query("SELEC 1", results)
    with pytest.raises(QueryError, match="nope"):
        run_query("SELECT * FROM nope", results)
    assert sorted(p.name for p in results.rglob("*")) == before


def test_mlflow_logging_reads_back_and_does_not_duplicate(estimates, tmp_path, monkeypatch) -> None:
    import mlflow

    from mibench.evaluate.mlflow_runs import log_benchmark
    from mibench.tracking import TrackingError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    metrics = compute_metrics(estimates, (0.5, 0.95))
    metrics_path = atomic_write_table(metrics.to_arrow(), results / "metrics" / "b.parquet")
    params = {"a": {"estimator": "x", "k": 3, "bootstrap": {"resamples": 10}}, "b": {}}
    grid = {"n": [100, 1000], "seeds": 1}
    artifacts = {"metrics": metrics_path}
    runs = log_benchmark("b", metrics, params, grid, artifacts, config_hash="cfg", git_sha="abc", results_dir=results)
    assert set(runs) == {"a", "b"}
    again = log_benchmark("b", metrics, params, grid, artifacts, config_hash="cfg", git_sha="abc", results_dir=results)
    assert again == runs  # same results: same runs, no duplicates

    mlflow.set_tracking_uri(f"sqlite:///{results / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["mibench/b"])
    assert len(found) == 2
    row = found.set_index("tags.mibench.estimator").loc["a"]
    assert row["params.estimator.k"] == "3" and row["params.estimator.bootstrap.resamples"] == "10"
    assert row["params.grid.n"] == "[100, 1000]" and row["tags.mibench.git_sha"] == "abc"
    assert row["metrics.mse"] == pytest.approx(overall(metrics, "a")["mse"])
    assert row["metrics.coverage_95"] == pytest.approx(2 / 3)
    assert "metrics.mse.family.student" in found.columns and "metrics.mse.n.1000" in found.columns
    assert row["metrics.mse.family.student.n_cells"] == 1 and row["metrics.mse.n.100.n_cells"] == 2
    assert [a.path for a in mlflow.artifacts.list_artifacts(run_id=runs["a"], artifact_path="metrics")] == [
        "metrics/b.parquet"
    ]

    with pytest.raises(TrackingError, match="unreachable"):
        log_benchmark("b", metrics, params, grid, [], results_dir=results, uri="http://127.0.0.1:9")
    assert pq.read_table(metrics_path).num_rows == metrics.height  # nothing lost


def test_estimates_parquet_is_plain_arrow(estimates, tmp_path) -> None:
    path = atomic_write_table(estimates.to_arrow(), tmp_path / "e.parquet")
    meta = pq.read_metadata(path).metadata or {}
    assert not any(b"pandas" in k for k in meta)  # no pickled pandas metadata
    assert json.loads(pq.read_table(path).column("extras")[0].as_py()) == {}


def test_task_summary_follows_bmis_conventions() -> None:
    """Mean over seeds per (task, n); samples needed = smallest n from which |ln(mean/true)| < ln 1.5 stays."""
    from mibench.evaluate import task_summary

    def rows(task, n, values, true=1.0, estimator="e"):
        out = []
        for seed, v in enumerate(values):
            r = _row(estimator, true, v, n=n, status="ok" if v is not None else "error")
            r.update(task=task, seed=seed, sample_id=f"{estimator}-{task}-{n}-{seed}")
            out.append(r)
        return out

    data = (
        rows("a", 100, [0.5, 0.6])  # mean 0.55: outside
        + rows("a", 1000, [1.3, 1.5])  # mean 1.4: within (ln 1.4 < ln 1.5)
        + rows("a", 5000, [1.0, 1.1, None])  # within, one error
        + rows("b", 100, [1.0, 1.0])  # within ...
        + rows("b", 1000, [2.0, 2.0])  # ... outside (ratio exactly 2) ...
        + rows("b", 5000, [1.2, 1.2])  # ... within again: needs 5000
        + rows("c", 100, [1.0, 1.0])
        + rows("c", 5000, [-0.1, 0.0])  # a non-positive mean never counts as within: never reached
        + rows("d", 5000, [0.2, 0.2], true=0.0)  # true MI 0: the ratio is undefined
    )
    data.append({**_row("e", 1.0, 9.0, split="test_imd"), "task": "meta-entry"})  # meta-split rows are left out
    out = task_summary(_frame(data)).sort(["task", "n"])
    a = out.filter(pl.col("task") == "a")
    assert a["mean"].to_list() == pytest.approx([0.55, 1.4, 1.05])
    assert a["seeds"].to_list() == [2, 2, 2] and a["errors"].to_list() == [0, 0, 1]
    assert a["within"].to_list() == [False, True, True]
    assert a["abs_log_ratio"][1] == pytest.approx(abs(__import__("math").log(1.4)))
    needed = dict(out.group_by("task").agg(pl.col("samples_needed").first()).iter_rows())
    assert needed == {"a": 1000, "b": 5000, "c": None, "d": None}
    assert "meta-entry" not in out["task"].to_list()
    assert task_summary(_frame(data[-1:])).is_empty()
