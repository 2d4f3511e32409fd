"""Training as `make run` does it: fixed steps (bitwise reproducible), a time guard that says when it fires,
progress lines that reach the job log while training runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mibench.cli import model_lines
from mibench.config import ConfigError
from mibench.config.learned import model_spec
from mibench.devices import DEVICE_ENV
from mibench.learned.checkpoint import load_model, sha256
from mibench.learned.infer import predict
from mibench.learned.trainer import Trainer, train_from_config
from tests.support.configs import write_config
from tests.support.learned import dependent_sample, tiny_model_entry

pytestmark = pytest.mark.usefixtures("restore_threads")


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def learn_config(tiny_config) -> dict:
    from mibench.config import parse_config

    tiny_config["meta"]["splits"]["validation"] = {
        **tiny_config["meta"]["splits"]["train"],
        "root_seed": 13,
        "count": 8,
    }
    tiny_config["models"] = {"mist": tiny_model_entry()}
    parse_config(tiny_config)  # valid; the tests edit the plain data
    return tiny_config


def _train(config: dict, out: Path, threads: int, **training):
    config["models"]["mist"] = tiny_model_entry(steps=30, **training)
    config["models"]["mist"]["threads"] = threads
    return train_from_config(config, "mist", out, tracking=False, progress=False)


def test_fixed_steps_give_the_same_model_bitwise_and_within_tolerance_across_threads(learn_config, tmp_path) -> None:
    one = _train(learn_config, tmp_path / "a", threads=1)
    again = _train(learn_config, tmp_path / "b", threads=1)
    assert sha256(one.weights) == sha256(again.weights)  # same platform, same threads: bitwise
    two = _train(learn_config, tmp_path / "c", threads=2)  # 2 torch threads: other summation orders
    assert torch.get_num_threads() == 2
    a, c = load_file(str(one.weights)), load_file(str(two.weights))
    assert a.keys() == c.keys()
    worst = max(float((a[k] - c[k]).abs().max()) for k in a)
    assert worst < 1e-3, f"weights differ by {worst} across thread counts"
    samples = [dependent_sample(n, dx, dy, seed) for n, dx, dy, seed in ((40, 2, 1, 0), (25, 3, 3, 1), (60, 1, 2, 2))]
    p1, q1 = predict(load_model(one.weights)[0], samples)
    p2, q2 = predict(load_model(two.weights)[0], samples)
    np.testing.assert_allclose(p1, p2, atol=1e-3)
    np.testing.assert_allclose(q1, q2, atol=1e-3)
    info = json.loads(one.config.read_text())["training"]
    assert info["steps_done"] == info["total_steps"] == 30 and info["stopped"] == "steps"


def test_the_time_guard_stops_validates_and_says_so_in_where(learn_config, tmp_path, venv_env) -> None:
    learn_config["models"]["mist"] = tiny_model_entry(steps=5000, time_budget_minutes=0.003)  # 0.18 s
    result = train_from_config(learn_config, "mist", tmp_path / "models", tracking=False, progress=False)
    config = json.loads(result.config.read_text())
    training = config["training"]
    assert result.status == "complete" and training["stopped"] == "time_budget"
    assert 0 < training["steps_done"] < 5000 and training["total_steps"] == 5000
    assert config["validation_history"][-1]["step"] == training["steps_done"]  # validated where it stopped
    learn_config["models"]["done"] = tiny_model_entry(steps=3)
    train_from_config(learn_config, "done", tmp_path / "models", tracking=False, progress=False)
    lines = model_lines(tmp_path / "models")
    assert len(lines) == 2
    assert "3 of 3 steps" in lines[0] and "stopped" not in lines[0]
    assert f"stopped by the time guard[/] at step {training['steps_done']} of 5000" in lines[1]
    proc = subprocess.run(
        [sys.executable, "-m", "mibench.cli", "where", "--results", str(tmp_path)],
        env={**venv_env, "COLUMNS": "400"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    (guard,) = [line for line in proc.stdout.splitlines() if "time guard" in line]
    assert guard.startswith("model mist: stopped by the time guard at step") and "not the fixed-step model" in guard


def test_progress_lines_reach_the_job_log_while_training_runs(learn_config, tmp_path, venv_env) -> None:
    learn_config["models"]["mist"] = tiny_model_entry(steps=2000, log_every=3, validate_every=6)
    config = write_config(tmp_path / "config.yaml", learn_config)
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "mibench.cli", "train", "--model", "mist", "--config", str(config),
           "--out", str(tmp_path / "models"), "--no-tracking"]  # fmt: skip
    with open(log, "w") as handle:  # not a terminal: log lines, no progress bar
        proc = subprocess.Popen(cmd, env=venv_env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while "validation" not in log.read_text() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
            running = proc.poll() is None
            text = log.read_text()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    assert running, f"training ended before its progress was seen:\n{text}"
    steps = [line for line in text.splitlines() if "  loss " in line]
    assert steps and "step 3/2000  loss " in steps[0]
    for field in ("mse", "pinball", "lr", "datasets/s", "elapsed", "ETA"):
        assert field in steps[0], (field, steps[0])
    assert "step 6/2000  validation  loss " in text and "coverage_90" in text


def test_log_every_is_checked_and_does_not_change_the_fingerprint() -> None:
    with pytest.raises(ConfigError, match=r"training.log_every: input should be greater than or equal to 1 \(got 0\)"):
        model_spec("m", {"training": {"log_every": 0}})
    assert model_spec("m", {"training": {"log_every": 1}}).fingerprint() == model_spec("m", {}).fingerprint()


def test_training_device_follows_the_one_device_policy(learn_config, tmp_path, monkeypatch) -> None:
    """`device: auto` honours $MIBENCH_DEVICE (mibench.devices), and CUDA asked for but missing is an error."""
    learn_config["models"]["mist"]["device"] = "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    with pytest.raises(ValueError, match=r"config.models.mist.device = 'auto': \$MIBENCH_DEVICE asks for 'cuda'"):
        train_from_config(learn_config, "mist", tmp_path, tracking=False, progress=False)
    with pytest.raises(ValueError, match=r"device argument = 'cuda:1': .*CUDA is not available"):
        train_from_config(learn_config, "mist", tmp_path, device="cuda:1", tracking=False, progress=False)
    assert not (tmp_path / "mist").exists()  # no silent CPU fallback: nothing was trained

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # `auto` alone would pick CUDA
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    spec = model_spec("mist", learn_config["models"]["mist"])
    assert Trainer(spec, learn_config, tmp_path / "mist", tracking=False).device == torch.device("cpu")
