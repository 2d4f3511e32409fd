"""Training MIST / MIST-QR: one model, two heads, one loop.

One model with a point head (MSE: MIST) and a quantile head (pinball over the τ grid: MIST-QR) on a shared
trunk, trained on ``loss_weights.mse · MSE + loss_weights.pinball · pinball``. One run gives both
estimators, which halves the GPU budget of the paper-scale run; set a weight to 0 to train a pure MIST or a
pure MIST-QR model as two entries of ``config.models``.

Loop (:class:`Trainer`, whose named steps :func:`train` runs): AdamW (no weight decay on biases, norms,
inducing points and seeds), linear warm-up then cosine decay to ``min_lr_ratio``, gradient clipping, bf16
autocast on CUDA, validation every epoch (or every k steps) on a fixed validation set, the best validation
weights become the model.

Resumable: ``<out>/train-state/state.safetensors`` (model, best weights, AdamW moments) and
``state.json`` (step, schedule, best metric, history, elapsed time, MLflow run id) are written atomically at
least every ``checkpoint_every_minutes``, at every validation, when a chunk's ``max_minutes`` run out and
on SIGTERM/SIGINT. Batch g is a pure function of (seed, g) (see :mod:`mibench.learned.data`), so an
interrupted run continues exactly where the uninterrupted one would be (bit-identical on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mibench import __version__, devices
from mibench.config import Config, ConfigError, ModelSpec, as_config, missing_model_splits
from mibench.config.schema import central_taus
from mibench.guards import StopRequest, on_sigterm
from mibench.learned.batching import Batch
from mibench.learned.calibration import MIN_DATASETS, fit_calibration
from mibench.learned.checkpoint import FORMAT_VERSION, save_checkpoint, save_tensors, write_json
from mibench.learned.data import Schedule, Source, batch_stream, fixed_set, make_source
from mibench.learned.model import MISTModel
from mibench.meta.plan import split_plans
from mibench.tracking.training import RunLogger

log = logging.getLogger("mibench.train")

PAUSED_EXIT_CODE = 75  # EX_TEMPFAIL: state saved, run again to continue
SYNC_EVERY = 10  # steps between reads of the per-step losses from the device


@dataclass
class TrainResult:
    status: str  # complete | paused | interrupted
    step: int
    total_steps: int
    weights: Path | None = None
    config: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)


# -- losses -----------------------------------------------------------------------------------------------
def pinball(quantiles: torch.Tensor, target: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
    """Mean pinball (quantile) loss over the batch and the τ grid."""
    err = target[:, None] - quantiles
    return torch.maximum(taus * err, (taus - 1) * err).mean()


def losses(model: MISTModel, batch: Batch, weights: Mapping[str, float], autocast: bool) -> dict[str, torch.Tensor]:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        point, quantiles = model(batch)
    target = batch.target
    mse = torch.mean((point - target) ** 2)
    pin = pinball(quantiles, target, model.taus)
    return {"loss": weights["mse"] * mse + weights["pinball"] * pin, "mse": mse, "pinball": pin}


@torch.no_grad()
def held_out_outputs(
    model: MISTModel, batches: list[Batch], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(points, raw quantiles, true MI, n) of the model on fixed held-out batches, on the CPU in float32."""
    model.eval()
    points, quants, targets, sizes = [], [], [], []
    for batch in batches:
        batch = batch.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            point, q = model(batch)
        points.append(point.float().cpu())
        quants.append(q.float().cpu())
        targets.append(batch.target.cpu())
        sizes.append(batch.n.cpu())
    model.train()
    return torch.cat(points), torch.cat(quants), torch.cat(targets), torch.cat(sizes)


def validation_metrics(
    model: MISTModel, batches: list[Batch], device: torch.device, weights: Mapping[str, float]
) -> dict[str, float]:
    """Point MSE/MAE, median MSE, pinball, coverage of the true MI by the 50/90 % central intervals (raw head)."""
    taus = [round(t, 10) for t in model.arch.taus]
    point, q, target, _ = held_out_outputs(model, batches, device)
    mse = float(torch.mean((point - target) ** 2))
    pin = float(pinball(q, target, torch.tensor(taus)))
    metrics = {
        "val_mse": mse,
        "val_mae": float(torch.mean((point - target).abs())),
        "val_bias": float(torch.mean(point - target)),
        "val_pinball": pin,
        "val_median_mse": float(torch.mean((q[:, taus.index(0.5)] - target) ** 2)),
        "val_loss": weights["mse"] * mse + weights["pinball"] * pin,
    }
    for level in (0.5, 0.9):
        lo, hi = central_taus(level)
        if lo in taus and hi in taus:
            inside = (q[:, taus.index(lo)] <= target) & (target <= q[:, taus.index(hi)])
            metrics[f"val_coverage_{int(level * 100)}"] = float(inside.float().mean())
    return metrics


# -- optimiser and schedule ---------------------------------------------------------------------------------
def make_optimizer(model: MISTModel, spec: ModelSpec) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or name.endswith(("points", "seeds")) else decay).append(param)
    t = spec.training
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.lr,
        betas=t.betas,
    )


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# -- resumable state ----------------------------------------------------------------------------------------
def state_dir(out_dir: Path) -> Path:
    return out_dir / "train-state"


def save_state(
    out_dir: Path,
    model: MISTModel,
    optimizer: torch.optim.Optimizer,
    best: Mapping[str, torch.Tensor] | None,
    info: Mapping[str, Any],
) -> None:
    """Write the resumable state: tensors to safetensors (never pickle), the rest to JSON."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    optim = optimizer.state_dict()
    for idx, slot in optim["state"].items():
        for name, value in slot.items():
            tensors[f"optim.{idx}.{name}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    folder = state_dir(out_dir)
    save_tensors(tensors, folder / "state.safetensors")
    write_json({**info, "param_groups": optim["param_groups"]}, folder / "state.json")


def load_state(
    out_dir: Path, model: MISTModel, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    from safetensors.torch import load_file

    folder = state_dir(out_dir)
    info = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "state.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")} or None
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": info.pop("param_groups")})
    return info, best


# -- the loop -------------------------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar on a terminal; otherwise one log line per ``log_every`` steps (job logs).

    Lines go through ``logging``, whose stream handler flushes every record, so ``tail -f`` on a job log
    (Snakemake's ``results/logs/train/<model>.log``, a SLURM output file) shows each line as it is written.
    """

    def __init__(self, total: int, start: int, enabled: bool | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total = total
        self.bar = None
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} datasets/s"),
                TimeRemainingColumn(),
                transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("train", total=total, completed=start, loss=float("nan"), rate=0.0)

    def update(self, step: int, loss: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=loss, rate=rate, total=self.total)

    def line(self, step: int, means: Mapping[str, float], lr: float, rate: float, elapsed: float, done: int) -> None:
        """One progress line: mean losses since the previous line, learning rate, throughput, time.

        ``elapsed`` seconds and ``done`` steps are this chunk's (a resumed run extrapolates from its own pace).
        """
        if self.bar is not None:
            return
        total = self.total or 0
        eta = f", ETA {_clock(elapsed / max(done, 1) * (total - step))}" if total and done > 0 else ""
        log.info(
            "step %d/%s  loss %.4f  mse %.4f  pinball %.4f  lr %.2e  %.0f datasets/s  %s elapsed%s",
            step,
            total or "?",
            means.get("loss", float("nan")),
            means.get("mse", float("nan")),
            means.get("pinball", float("nan")),
            lr,
            rate,
            _clock(elapsed),
            eta,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _validation_line(step: int, total: int | None, metrics: Mapping[str, float]) -> str:
    shown = ("val_loss", "val_mse", "val_mae", "val_bias", "val_median_mse", "val_coverage_50", "val_coverage_90")
    parts = [
        f"{k[4:]} {metrics[k]:+.4f}" if k == "val_bias" else f"{k[4:]} {metrics[k]:.4f}" for k in shown if k in metrics
    ]
    return f"step {step}/{total or '?'}  validation  " + "  ".join(parts)


def build_sources(spec: ModelSpec, config: Config, shard_root: str | Path) -> tuple[Source, Source | None]:
    plans = split_plans(config)
    train = make_source(spec.data.source, plans[spec.data.train_split], spec.data.train_count, shard_root)
    validation = None
    if spec.data.validation_split is not None:
        validation = make_source(spec.data.source, plans[spec.data.validation_split], None, shard_root)
    return train, validation


class Trainer:
    """One training run of ``spec`` into ``out_dir``, its state explicit: ``info`` is what ``state.json`` holds.

    Named steps: :meth:`resume` (a saved state, if there is one), :meth:`start` (device, MLflow run, batch
    stream, the untrained baseline), :meth:`step` per batch with :meth:`run_validation` and :meth:`snapshot`
    when due, then :meth:`finish` (the model files) or :meth:`pause` (the state only). :meth:`run` is the loop.
    """

    def __init__(
        self,
        spec: ModelSpec,
        config: Config | Mapping[str, Any],
        out_dir: str | Path,
        *,
        shard_root: str | Path = "results/meta",
        device: str | None = None,
        tracking: bool = True,
    ) -> None:
        self.spec = spec
        self.out_dir = Path(out_dir)
        t = self.t = spec.training
        self._use_device(device)
        self.config = as_config(config)
        self._prepare_data(shard_root)

        torch.manual_seed(t.seed)
        self.model = MISTModel(spec.architecture)
        self.optimizer = make_optimizer(self.model, spec)
        # the model config and what its inputs mean: a state saved by a mibench whose checkpoints had another
        # format (e.g. raw instead of excess statistics, same tensor shapes) must not be resumed
        self.fingerprint = f"{spec.fingerprint()}-format{FORMAT_VERSION}"
        self.info: dict[str, Any] = self._new_info()
        self.best: dict[str, torch.Tensor] | None = None  # the best validation weights so far, on the CPU
        self.tracker = RunLogger(enabled=tracking)
        self._declare_chunk_state()

    def _use_device(self, device: str | None) -> None:
        """The run's device (the argument wins over the config) and its settings, before any tensor is made:
        a bad device names where it was set."""
        spec, t = self.spec, self.t
        requested = device or spec.device
        try:  # mibench's one device policy: `auto` honours $MIBENCH_DEVICE; missing CUDA is an error
            self.device = torch.device(devices.resolve_device(requested))
        except ValueError as exc:
            where = "device argument" if device else f"config.models.{spec.name}.device"
            raise ValueError(f"{where} = {requested!r}: {exc}") from exc
        if self.device.type == "cpu":  # `threads` is the job's CPU share: data workers take theirs first
            torch.set_num_threads(max(1, spec.threads - t.workers))
        else:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.autocast = self.device.type == "cuda"

    def _new_info(self) -> dict[str, Any]:
        """The state of a run that has not begun (what ``state.json`` holds, until :meth:`resume` loads one)."""
        t = self.t
        return {
            "step": 0,
            "total_steps": None if t.steps == "auto" else int(t.steps),
            "elapsed_seconds": 0.0,
            "best_metric": None,
            "best_step": None,
            "history": [],
            "fingerprint": self.fingerprint,
            "mlflow_run_id": None,
            "complete": False,
        }

    def _declare_chunk_state(self) -> None:
        """This invocation's state (a "chunk" of the run), set by :meth:`start` and :meth:`step`: declared here so
        every attribute exists from the start."""
        self.global_step = 0
        self.start_step = 0
        self.total = 10**9
        self.stop_at = self.total
        self.max_steps: int | None = None
        self.max_minutes: float | None = None
        self.chunk_start = self.now = self.last_snapshot = time.monotonic()
        self.elapsed_before = 0.0
        self.lr = self.t.lr
        self.rate = 0.0  # datasets/s over the last 20 steps
        self.loss_value = float("nan")  # latest training loss read from the device
        self.pending: list[tuple] = []  # per-step values still on the device
        self.since_line: list[list[float]] = []  # per-step (loss, mse, pinball, grad norm) since the last line
        self.window: list[tuple[float, int]] = []  # (time, batch size) of the last steps
        self.calibration_start: float | None = None
        self.last_metrics: dict[str, float] = {}
        self.forward_model: Any = self.model
        self.bar: _Progress | None = None
        self.stream: Iterator[Batch] | None = None

    # -- named steps ---------------------------------------------------------------------------------------
    def resume(self, fresh: bool = False) -> bool:
        """Load ``train-state/`` if it is an unfinished run of this model config; True if it was loaded."""
        state_file = state_dir(self.out_dir) / "state.json"
        if fresh or not state_file.exists():
            return False
        saved = json.loads(state_file.read_text())
        if saved.get("fingerprint") != self.fingerprint:
            log.warning(
                "%s was written for another model config (fingerprint %s, now %s); starting fresh",
                state_file,
                saved.get("fingerprint"),
                self.fingerprint,
            )
            return False
        if saved.get("complete"):
            log.info("%s is a finished run; starting a fresh one", state_file)
            return False
        self.info, self.best = load_state(self.out_dir, self.model, self.optimizer)
        log.info("resuming %s at step %d", self.spec.name, self.info["step"])
        return True

    def start(
        self, *, max_steps: int | None = None, max_minutes: float | None = None, progress: bool | None = None
    ) -> None:
        """Model and AdamW moments to the device, the MLflow run (re)opened, the batch stream at the saved step,
        and the untrained baseline's validation metrics recorded (so that "validation loss falls" is measurable)."""
        t, dev = self.t, self.device
        self.model.to(dev)
        for slot in self.optimizer.state.values():  # moments follow the parameters' device
            for key, value in slot.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    slot[key] = value.to(dev)
        self.forward_model = torch.compile(self.model) if (t.compile and dev.type == "cuda") else self.model
        run_params = {"model": self.spec.to_dict(), "parameters": self.model.parameter_count(), "device": str(dev)}
        self.info["mlflow_run_id"] = self.tracker.start(
            self.spec.name,
            run_params,
            self.info.get("mlflow_run_id"),
            tags={"mibench_version": __version__, "model": self.spec.name},
        )
        self.start_step = self.global_step = int(self.info["step"])
        self.total = self.info["total_steps"] or 10**9
        self.max_steps, self.max_minutes = max_steps, max_minutes
        self.stop_at = self._stop_at()
        self.chunk_start = time.monotonic()
        self.elapsed_before = float(self.info["elapsed_seconds"])
        self.last_snapshot = time.monotonic()
        self.bar = _Progress(self.info["total_steps"] or 0, self.start_step, progress)
        self.stream = batch_stream(
            self.train_src,
            batch_size=t.batch_size,
            pool=t.bucket_pool,
            seed=t.seed,
            normalisation=self.spec.architecture.normalisation,
            start=self.start_step,
            stop=10**9 if self.info["total_steps"] is None else self.total,
            workers=t.workers,
            pin_memory=dev.type == "cuda",
        )
        if self.val_batches and not self.info["history"]:
            self.last_metrics = {**validation_metrics(self.model, self.val_batches, dev, t.loss_weights), "epoch": 0.0}
            self.info["history"].append({"step": 0, **self.last_metrics})
            self.tracker.log(self.last_metrics, 0, force=True)
        self.model.train()

    def step(self, batch: Batch) -> None:
        """One optimisation step on ``batch`` (on the device); its losses stay pending on the device."""
        t = self.t
        self.lr = t.lr * lr_factor(self.global_step, self.total, t.warmup_steps, t.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        out = losses(self.forward_model, batch, t.loss_weights, self.autocast)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.global_step += 1
        self.info["step"] = self.global_step
        self.now = now = time.monotonic()
        self.window = [*self.window[-19:], (now, batch.size)]
        if len(self.window) > 1:
            self.rate = sum(s for _, s in self.window[1:]) / max(1e-9, self.window[-1][0] - self.window[0][0])
        self.info["elapsed_seconds"] = self.elapsed_before + (now - self.chunk_start)
        # per-step losses stay on the device and are read in groups (one sync per group on CUDA)
        self.pending.append(
            (
                self.global_step,
                self.lr,
                self.rate,
                out["loss"].detach(),
                out["mse"].detach(),
                out["pinball"].detach(),
                grad_norm.detach(),
            )
        )

    def run_validation(self, finished: bool) -> None:
        """Validate when due (every ``validate_every`` steps, and at the end); keep the best weights, save."""
        due = bool(self.val_batches) and self.global_step % self.validation_every == 0
        if due or finished:
            self.loss_value = self._flush()
        if not self.val_batches or not (due or finished):
            return
        step = self.global_step
        metrics = validation_metrics(self.model, self.val_batches, self.device, self.t.loss_weights)
        metrics["epoch"] = step / self.schedule.batches_per_epoch
        self.info["history"].append({"step": step, **metrics})
        self.tracker.log(metrics, step, force=True)
        self.last_metrics = metrics
        if self.info["best_metric"] is None or metrics["val_loss"] < self.info["best_metric"]:
            self.info["best_metric"], self.info["best_step"] = metrics["val_loss"], step
            self.best = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        log.info(_validation_line(step, self.info["total_steps"], metrics))
        self.snapshot()

    def snapshot(self) -> None:
        """Save the resumable state (each file written atomically)."""
        save_state(self.out_dir, self.model, self.optimizer, self.best, self.info)
        self.last_snapshot = time.monotonic()

    def run(self) -> TrainResult:
        """Step until the schedule ends, ``max_steps``/``max_minutes`` run out or a signal comes; then
        :meth:`finish` or :meth:`pause`. Call :meth:`start` first."""
        assert self.bar is not None, "Trainer.start() first"
        status = "complete"
        try:
            with on_sigterm(signals=(signal.SIGTERM, signal.SIGINT)) as stop:
                while self.global_step < self.stop_at:
                    batch = self._next_batch(stop)
                    if batch is None:  # a data worker got the signal first
                        status = "interrupted"
                        break
                    self.step(batch)
                    line_due = self._log_step()
                    over_budget = self._time_guard(line_due)
                    finished = self.global_step >= self.total or over_budget
                    self.run_validation(finished)
                    if finished:
                        break
                    out_of_time = self.max_minutes is not None and self.now - self.chunk_start >= self.max_minutes * 60
                    if stop.requested or out_of_time:
                        status = "interrupted" if stop.requested else "paused"
                        break
                    if self.now - self.last_snapshot >= self.t.checkpoint_every_minutes * 60:
                        self.snapshot()
                else:
                    if self.global_step < self.total:
                        status = "paused"  # max_steps reached
        finally:
            self._flush()
            self.bar.close()
        return self.finish() if status == "complete" else self.pause(status)

    def pause(self, status: str) -> TrainResult:
        """Stopped early (``paused`` or ``interrupted``): save the state; running again continues."""
        self.snapshot()
        if status == "interrupted":
            self.tracker.end("KILLED")
        else:
            self.tracker.flush()
        log.info(
            "%s at step %d/%s; state saved in %s",
            status,
            self.global_step,
            self.info["total_steps"],
            state_dir(self.out_dir),
        )
        return TrainResult(status, self.global_step, int(self.info["total_steps"] or 0), metrics=self.last_metrics)

    def finish(self) -> TrainResult:
        """The best validation weights (or the last ones) become the model: final state, model files, MLflow."""
        if self.best is not None:
            self.model.load_state_dict(self.best)
        self._calibrate_quantiles()
        info = self.info
        info["complete"] = True
        info.setdefault("stopped", "steps")
        self.snapshot()
        weights, config_json = save_checkpoint(self.model.cpu(), self.out_dir / "model.safetensors", self._outcome())
        self.tracker.log({"final_" + k: v for k, v in self.last_metrics.items()}, self.global_step, force=True)
        self.tracker.artifacts([weights, config_json])
        self.tracker.end("FINISHED")
        log.info(
            "finished %s: %d of %s steps in %s (stopped by: %s), best validation loss %s at step %s",
            self.spec.name,
            self.global_step,
            info["total_steps"],
            _clock(info["elapsed_seconds"]),
            "the time guard" if info["stopped"] == "time_budget" else info["stopped"],
            "n/a" if info["best_metric"] is None else f"{info['best_metric']:.4f}",
            info["best_step"],
        )
        log.info("wrote %s and %s", weights, config_json)
        return TrainResult(
            "complete", self.global_step, int(info["total_steps"]), weights, config_json, self.last_metrics
        )

    # -- helpers of the steps ---------------------------------------------------------------------------------
    def _calibrate_quantiles(self) -> None:
        """Conformal offsets of the quantile head from the validation set (:mod:`mibench.learned.calibration`).

        The validation set also picked the best weights; that selection is over a handful of snapshots by a
        loss, so the coverage it could buy is small (``benchmarks/mist_vs_reference.py`` measures on fresh cells).
        """
        self.model.calibration = None
        if not self.val_batches:
            log.info("quantiles not calibrated: no validation split")
            return
        _, q, target, n = held_out_outputs(self.model, self.val_batches, self.device)
        calibration = fit_calibration(q.numpy(), target.numpy(), n.numpy(), self.model.arch.taus)
        if calibration is None:
            log.info("quantiles not calibrated: fewer than %d validation datasets", MIN_DATASETS)
            return
        self.model.calibration = calibration
        taus, (lo, hi) = [round(t, 10) for t in self.model.arch.taus], central_taus(0.9)
        shown = ""
        if lo in taus and hi in taus:
            i, j = taus.index(lo), taus.index(hi)
            shown = ": 90 % interval offsets " + ", ".join(f"[{r[i]:+.3f}, {r[j]:+.3f}]" for r in calibration.offsets)
        log.info("quantiles calibrated on %d validation datasets in %d n-bin(s)%s", sum(calibration.counts),
                 len(calibration.counts), shown)  # fmt: skip

    def _prepare_data(self, shard_root: str | Path) -> None:
        """Training and validation sources, the fixed validation batches, the epoch schedule."""
        spec, t = self.spec, self.t
        self.train_src, self.val_src = build_sources(spec, self.config, shard_root)
        norm = spec.architecture.normalisation
        self.val_batches: list[Batch] = (
            fixed_set(self.val_src, spec.data.validation_count, norm, t.batch_size) if self.val_src is not None else []
        )
        if len(self.train_src) < t.batch_size:
            raise ConfigError(
                f"config.models.{spec.name}.training.batch_size: {t.batch_size} is more than the "
                f"{len(self.train_src)} training samples ({self.train_src.describe()['source']} source of split "
                f"{spec.data.train_split!r})"
            )
        self.schedule = Schedule(len(self.train_src), t.batch_size, t.bucket_pool)
        self.validation_every = (
            self.schedule.batches_per_epoch if t.validate_every == "epoch" else int(t.validate_every)
        )

    def _stop_at(self) -> int:
        return min(self.total, self.start_step + self.max_steps) if self.max_steps else self.total

    def _next_batch(self, stop: StopRequest) -> Batch | None:
        """The next batch on the device; None when a stop signal broke the data workers."""
        assert self.stream is not None
        try:
            return next(self.stream).to(self.device, non_blocking=True)
        except Exception:
            if stop.requested:
                return None
            raise

    def _log_step(self) -> bool:
        """Progress line and MLflow metrics when due, ``steps: auto`` calibration; True if a line was due."""
        assert self.bar is not None
        line_due = self.global_step % self.t.log_every == 0 or self.global_step >= self.stop_at
        if len(self.pending) >= SYNC_EVERY or line_due:
            self.loss_value = self._flush()
        if line_due:
            self._progress_line()
        if self.info["total_steps"] is None:
            self._calibrate()
        if not self.pending:
            self.bar.update(self.global_step, self.loss_value, self.rate)
        return line_due

    def _calibrate(self) -> None:
        """``steps: auto``: fix the schedule once the time per step is known (after ``calibration_steps``)."""
        t, step = self.t, self.global_step
        if step == self.start_step + 5:
            self.calibration_start = self.now
        elif self.calibration_start is not None and step == self.start_step + 5 + t.calibration_steps:
            per_step = (self.now - self.calibration_start) / t.calibration_steps
            budget = t.time_budget_minutes * 60 * 0.9 - self.info["elapsed_seconds"]
            self.info["total_steps"] = self.total = step + max(1, int(budget / per_step))
            self.stop_at = self._stop_at()
            assert self.bar is not None
            self.bar.total = self.total
            log.info("steps: auto -> %d steps (%.1f ms/step)", self.total, per_step * 1e3)

    def _time_guard(self, line_due: bool) -> bool:
        """The wall-clock budget is a guard: when it fires, training ends with the best weights and says so."""
        t = self.t
        over_budget = t.time_budget_minutes is not None and self.info["elapsed_seconds"] >= t.time_budget_minutes * 60
        if over_budget and self.global_step < self.total:
            if not line_due:
                self.loss_value = self._flush()
                self._progress_line()
            log.warning(
                "time guard: training.time_budget_minutes = %g reached at step %d of %d; training stops "
                "early with the best validation weights so far (the model now depends on this machine's "
                "speed and load; raise time_budget_minutes or lower steps for the fixed-step model)",
                t.time_budget_minutes,
                self.global_step,
                self.total,
            )
            self.info["stopped"] = "time_budget"
        return over_budget

    def _flush(self) -> float:
        """Read the pending per-step values from the device and log them; returns the latest training loss."""
        if not self.pending:
            return self.loss_value
        values = torch.stack([torch.stack([p[3], p[4], p[5], p[6]]).float() for p in self.pending]).cpu().tolist()
        self.since_line.extend(values)
        for (s, lr, r, *_), (loss, mse, pin, gnorm) in zip(self.pending, values, strict=True):
            self.tracker.log(
                {
                    "train_loss": loss,
                    "train_mse": mse,
                    "train_pinball": pin,
                    "grad_norm": gnorm,
                    "lr": lr,
                    "datasets_per_second": r,
                },
                s,
            )
        self.pending.clear()
        return values[-1][0]

    def _progress_line(self) -> None:
        """Mean losses since the previous line (a log line, or nothing under a progress bar)."""
        if not self.since_line or self.bar is None:
            return
        means = np.mean(np.array(self.since_line)[:, :3], axis=0).tolist()
        self.bar.line(
            self.global_step,
            dict(zip(("loss", "mse", "pinball"), means, strict=True)),
            self.lr,
            self.rate,
            self.info["elapsed_seconds"] - self.elapsed_before,
            self.global_step - self.start_step,
        )
        self.since_line.clear()

    def _outcome(self) -> dict[str, Any]:
        """``model.json``'s training record: settings, what was done, the data and the validation history."""
        spec, info = self.spec, self.info
        return {
            "model": spec.name,
            "preset": spec.preset,
            "training": {
                **spec.to_dict()["training"],
                "steps_done": self.global_step,
                "total_steps": info["total_steps"],
                "best_step": info["best_step"],
                "best_val_loss": info["best_metric"],
                "stopped": info["stopped"],
                "elapsed_seconds": round(info["elapsed_seconds"], 2),
                "device": str(self.device),
                "datasets_per_second": round(self.rate, 1),
            },
            "data": {
                **spec.to_dict()["data"],
                "train": self.train_src.describe(),
                "validation": self.val_src.describe() if self.val_src is not None else None,
                "splits": {
                    name: self.config.split_config(name).model_dump(mode="json", exclude_none=True)
                    for name in (spec.data.train_split, spec.data.validation_split)
                    if name is not None
                },
            },
            "validation_history": info["history"],
            "config_fingerprint": self.fingerprint,
        }


def train(
    spec: ModelSpec,
    config: Config | Mapping[str, Any],
    out_dir: str | Path,
    *,
    shard_root: str | Path = "results/meta",
    max_minutes: float | None = None,
    max_steps: int | None = None,
    device: str | None = None,
    progress: bool | None = None,
    fresh: bool = False,
    tracking: bool = True,
) -> TrainResult:
    """Train (or resume training) ``spec``; writes ``out_dir/model.safetensors`` + ``model.json`` when done.

    ``max_minutes``/``max_steps`` end this invocation early (state saved, status ``paused``); running again
    continues. ``fresh`` discards a saved state.
    """
    trainer = Trainer(spec, config, out_dir, shard_root=shard_root, device=device, tracking=tracking)
    trainer.resume(fresh=fresh)
    trainer.start(max_steps=max_steps, max_minutes=max_minutes, progress=progress)
    return trainer.run()


def train_from_config(
    config: str | os.PathLike | Mapping[str, Any],
    model: str,
    out_root: str | Path = "results/models",
    **kwargs: Any,
) -> TrainResult:
    """Train ``config.models.<model>`` into ``out_root/<model>/`` (what ``mibench train`` and the rule call)."""
    cfg = as_config(config)
    if model not in cfg.models:
        raise ConfigError(f"config.models has no model {model!r}; models: {', '.join(cfg.models) or 'none'}")
    spec = cfg.models[model].spec(model)
    missing = missing_model_splits(cfg, model, spec)
    if missing:
        raise ConfigError("\n".join(missing))
    return train(spec, cfg, Path(out_root) / model, **kwargs)
