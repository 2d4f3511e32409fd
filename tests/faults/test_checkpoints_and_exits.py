"""Tampered checkpoints are refused; honest exits of `mibench ui`; every output gets the same permissions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import tests.support.estimators  # noqa: F401 - registers the test estimators
from mibench.config.learned import PRESETS
from mibench.evaluate.report import report_from_disk
from mibench.learned.checkpoint import CheckpointError, load_model, save_checkpoint
from mibench.learned.model import MISTModel
from tests.support.integrity import (
    build_results,
    cli,
    cli_outcome,
    shard_of,
)
from tests.support.reliability import attempt

# ------------------------------------------------------------------------------------------------- checkpoints


def _set(path: tuple[str, ...], value):
    def edit(cfg: dict) -> None:
        target = cfg
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value

    return edit


CHECKPOINT_EDITS = {
    "attention heads (shapes unchanged)": (_set(("architecture", "heads"), 2), "edited after training"),
    "normalisation": (  # copula -> robust: the same tensor shapes, only the hash can tell
        lambda cfg: (_set(("architecture", "normalisation"), "robust")(cfg), _set(("normalisation",), "robust")(cfg)),
        "edited after training",
    ),
    "normalisation with another channel count": (
        lambda cfg: (
            _set(("architecture", "normalisation"), "copula+robust")(cfg),
            _set(("normalisation",), "copula+robust")(cfg),
        ),
        "do not fit the architecture",
    ),
    "calibration offsets": (
        _set(("calibration",), {"taus": [0.5], "n_upper": [None], "offsets": [[9.0]], "counts": [50]}),
        "edited after training",
    ),
    "τ grid": (_set(("architecture", "taus"), lambda t: [round(t[0] * 0.9, 6), *t[1:]]), "edited after training"),
    "top-level taus only": (_set(("taus",), lambda t: [round(t[0] * 0.9, 6), *t[1:]]), "edited after training"),
    "training section": (_set(("training",), {"steps_done": 10**6}), "config_sha256"),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model = MISTModel(PRESETS["tiny"].replace(normalisation="copula"))  # one channel: see the normalisation cases
    weights, _ = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "model.safetensors", {"training": {}})
    return weights


@pytest.mark.parametrize("case", list(CHECKPOINT_EDITS))
def test_an_edited_model_json_is_refused(checkpoint, tmp_path, ledger, case) -> None:
    edit, says = CHECKPOINT_EDITS[case]
    weights = tmp_path / "model.safetensors"
    shutil.copyfile(checkpoint, weights)
    cfg = json.loads(checkpoint.with_suffix(".json").read_text())
    load_model(checkpoint)  # the untouched checkpoint loads
    edit(cfg)
    weights.with_suffix(".json").write_text(json.dumps(cfg, indent=2))
    outcome, message = attempt(lambda: load_model(weights), (CheckpointError,), "model.json", says)
    ledger(
        group="content integrity",
        fault=f"model.json edited: {case}",
        injected="a field of a trained checkpoint's model.json changed by hand",
        expected="CheckpointError naming model.json; nothing loads",
        observed=message.replace(str(tmp_path), "")[:200],
        outcome=outcome,
        results_lost=0,
    )
    assert outcome == "clear error", message


# ---------------------------------------------------------------------------------------------- honest exits


def test_mibench_ui_refuses_a_port_in_use_and_a_tracking_server(results, monkeypatch, ledger) -> None:
    root, _ = results
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own store, whatever ran before
    import mlflow

    mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_experiments()  # a real, empty store
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        start = time.monotonic()
        code, output, exc = cli("ui", "--results", str(root), "--port", str(port))
        seconds = time.monotonic() - start
    outcome = cli_outcome(code, output, exc, f"127.0.0.1:{port}", "address already in use")
    ledger(
        group="honest exits",
        fault="mibench ui: its port in use",
        injected="a socket listening on the port before `mibench ui --port` starts",
        expected="exit 1 naming the port and 'address already in use'; no URL printed",
        observed=f"exit {code} after {seconds:.1f} s: {' '.join(output.split())[:150]}",
        outcome=outcome if "http://" not in output else "silently wrong",
        results_lost=0,
    )
    assert outcome == "clear error" and "http://" not in output, output

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example.invalid:5000")
    code, output, exc = cli("ui", "--results", str(root))
    outcome = cli_outcome(code, output, exc, "http://mlflow.example.invalid:5000", "serves its own UI")
    ledger(
        group="honest exits",
        fault="mibench ui: a remote tracking URI",
        injected="MLFLOW_TRACKING_URI=http://mlflow.example.invalid:5000",
        expected="exit 1: that server serves its own UI; no traceback",
        observed=f"exit {code}: {' '.join(output.split())[:150]}",
        outcome=outcome,
        results_lost=0,
    )
    assert outcome == "clear error", output


def test_every_output_gets_the_same_permissions(base, tmp_path, ledger) -> None:
    """Parquet, figures, the report and checkpoints: 0666 & ~umask (group-readable on a shared filesystem)."""
    _, config = base
    old = os.umask(0o027)
    try:
        results = build_results(tmp_path, config)
        report_from_disk(config, results, results / "report" / "index.html")
        save_checkpoint(MISTModel(PRESETS["tiny"]), results / "models" / "m" / "model.safetensors")
    finally:
        os.umask(old)
    kinds = {
        "parquet": results / "metrics" / "grid.parquet",
        "shard": shard_of(results, 0),
        "figure": results / "figures" / "grid" / "estimate_vs_true.png",
        "report": results / "report" / "index.html",
        "checkpoint weights": results / "models" / "m" / "model.safetensors",
        "checkpoint json": results / "models" / "m" / "model.json",
    }
    modes = {kind: oct(path.stat().st_mode & 0o777) for kind, path in kinds.items()}
    outcome = "right answer" if set(modes.values()) == {"0o640"} else "silently wrong"
    ledger(
        group="honest exits",
        fault="permissions of figures, report and checkpoints",
        injected="umask 027 (a group-shared cluster filesystem)",
        expected="every output 0640 like Parquet (figures and checkpoints were 0600)",
        observed=", ".join(f"{k} {v}" for k, v in modes.items()),
        outcome=outcome,
        results_lost=0,
    )
    assert set(modes.values()) == {"0o640"}, modes


@pytest.mark.slow
def test_mibench_ui_serves_then_stops_with_its_server(results, venv_env, ledger) -> None:
    root, _ = results
    import mlflow

    mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}").search_experiments()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mibench.cli", "ui", "--results", str(root), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=venv_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        start = time.monotonic()
        line = proc.stdout.readline()  # printed only once the UI answers
        ready = time.monotonic() - start
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            health = response.read().decode()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as probe:
        stopped = probe.connect_ex(("127.0.0.1", port)) != 0
    right = f"http://127.0.0.1:{port}" in line and health == "OK" and proc.returncode == 0 and stopped
    ledger(
        group="honest exits",
        fault="mibench ui: serve, then SIGTERM",
        injected="`mibench ui` on a free port, one request, then SIGTERM",
        expected="URL printed only once serving; exit 0 and the server stopped with it",
        observed=f"URL after {ready:.0f} s, /health {health!r}, exit {proc.returncode}, port closed: {stopped}",
        outcome="right answer" if right else "silently wrong",
        results_lost=0,
    )
    assert right, (line, health, proc.returncode, stopped)
