"""Training MIST / MIST-QR: one model, two heads, one loop.

One model with a point head (MSE: MIST) and a quantile head (pinball over the τ grid: MIST-QR) on a shared
trunk, trained on ``loss_weights.mse · MSE + loss_weights.pinball · pinball``. One run gives both
estimators, which halves the GPU budget of the paper-scale run; set a weight to 0 to train a pure MIST or a
pure MIST-QR model as two entries of ``config.models``.

Loop: AdamW (no weight decay on biases, norms, inducing points and seeds), linear warm-up then cosine decay
to ``min_lr_ratio``, gradient clipping, bf16 autocast on CUDA, validation every epoch (or every k steps)
on a fixed validation set, the best validation weights become the model.

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

from mibench import __version__
from mibench.config import Config, ConfigError, ModelSpec, as_config
from mibench.learned.batching import Batch
from mibench.learned.checkpoint import save_checkpoint, save_tensors, write_json
from mibench.learned.data import Schedule, Source, batch_stream, fixed_set, make_source
from mibench.learned.model import MISTModel
from mibench.learned.tracking import RunLogger
from mibench.meta.plan import split_plans

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


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available, else CPU (the CPU fallback of the GPU rule)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.warning("device %s requested but CUDA is not available; training on CPU", name)
        return torch.device("cpu")
    return device


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
def validate(
    model: MISTModel, batches: list[Batch], device: torch.device, weights: Mapping[str, float]
) -> dict[str, float]:
    """Point MSE/MAE, median MSE, pinball, coverage of the true MI by the 50/90 % central intervals."""
    model.eval()
    taus = [round(t, 10) for t in model.arch.taus]
    points, quants, targets = [], [], []
    for batch in batches:
        batch = batch.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            point, q = model(batch)
        points.append(point.float().cpu())
        quants.append(q.float().cpu())
        targets.append(batch.target.cpu())
    model.train()
    point, q, target = torch.cat(points), torch.cat(quants), torch.cat(targets)
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
        lo, hi = round((1 - level) / 2, 10), round((1 + level) / 2, 10)
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
class _Stop:
    """SIGTERM/SIGINT -> finish the current step, save the state, exit (SLURM sends SIGTERM before a kill)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


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
    out_dir = Path(out_dir)
    t = spec.training
    dev = resolve_device(device or spec.device)
    if dev.type == "cpu":  # `threads` is the job's CPU share: data workers take theirs first
        torch.set_num_threads(max(1, spec.threads - t.workers))
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast = dev.type == "cuda"
    config = as_config(config)
    train_src, val_src = build_sources(spec, config, shard_root)
    norm = spec.architecture.normalisation
    val_batches = fixed_set(val_src, spec.data.validation_count, norm, t.batch_size) if val_src is not None else []
    if len(train_src) < t.batch_size:
        raise ConfigError(
            f"config.models.{spec.name}.training.batch_size: {t.batch_size} is more than the {len(train_src)} "
            f"training samples ({train_src.describe()['source']} source of split {spec.data.train_split!r})"
        )
    schedule = Schedule(len(train_src), t.batch_size, t.bucket_pool)
    validate_every = schedule.batches_per_epoch if t.validate_every == "epoch" else int(t.validate_every)

    torch.manual_seed(t.seed)
    model = MISTModel(spec.architecture)
    optimizer = make_optimizer(model, spec)
    fingerprint = spec.fingerprint()
    info: dict[str, Any] = {
        "step": 0,
        "total_steps": None if t.steps == "auto" else int(t.steps),
        "elapsed_seconds": 0.0,
        "best_metric": None,
        "best_step": None,
        "history": [],
        "fingerprint": fingerprint,
        "mlflow_run_id": None,
        "complete": False,
    }
    best: dict[str, torch.Tensor] | None = None
    state_file = state_dir(out_dir) / "state.json"
    if state_file.exists() and not fresh:
        saved = json.loads(state_file.read_text())
        if saved.get("fingerprint") != fingerprint:
            log.warning(
                "%s was written for another model config (fingerprint %s, now %s); starting fresh",
                state_file,
                saved.get("fingerprint"),
                fingerprint,
            )
        elif saved.get("complete"):
            log.info("%s is a finished run; starting a fresh one", state_file)
        else:
            info, best = load_state(out_dir, model, optimizer)
            log.info("resuming %s at step %d", spec.name, info["step"])
    model.to(dev)
    for slot in optimizer.state.values():  # moments follow the parameters' device
        for key, value in slot.items():
            if isinstance(value, torch.Tensor) and key != "step":
                slot[key] = value.to(dev)
    forward_model = torch.compile(model) if (t.compile and dev.type == "cuda") else model

    tracker = RunLogger(enabled=tracking)
    run_params = {"model": spec.to_dict(), "parameters": model.parameter_count(), "device": str(dev)}
    info["mlflow_run_id"] = tracker.start(
        spec.name, run_params, info.get("mlflow_run_id"), tags={"mibench_version": __version__, "model": spec.name}
    )

    def snapshot() -> None:
        save_state(out_dir, model, optimizer, best, info)

    start_step = int(info["step"])
    total = info["total_steps"] or 10**9
    stop_at = min(total, start_step + max_steps) if max_steps else total
    chunk_start = time.monotonic()
    elapsed_before = float(info["elapsed_seconds"])
    last_snapshot = time.monotonic()
    status = "complete"
    bar = _Progress(info["total_steps"] or 0, start_step, progress)
    stream: Iterator[Batch] = batch_stream(
        train_src,
        batch_size=t.batch_size,
        pool=t.bucket_pool,
        seed=t.seed,
        normalisation=norm,
        start=start_step,
        stop=10**9 if info["total_steps"] is None else total,
        workers=t.workers,
        pin_memory=dev.type == "cuda",
    )
    rate = 0.0
    loss_value = float("nan")
    pending: list[tuple] = []
    since_line: list[list[float]] = []  # per-step (loss, mse, pinball, grad norm) since the last progress line

    def progress_line(lr: float) -> None:
        if since_line:
            means = dict(
                zip(("loss", "mse", "pinball"), np.mean(np.array(since_line)[:, :3], axis=0).tolist(), strict=True)
            )
            bar.line(step, means, lr, rate, info["elapsed_seconds"] - elapsed_before, step - start_step)
            since_line.clear()

    def flush_pending() -> float:
        """Log the buffered per-step metrics; returns the latest training loss."""
        if not pending:
            return loss_value
        values = torch.stack([torch.stack([p[3], p[4], p[5], p[6]]).float() for p in pending]).cpu().tolist()
        since_line.extend(values)
        for (s, lr, r, *_), (loss, mse, pin, gnorm) in zip(pending, values, strict=True):
            tracker.log(
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
        pending.clear()
        return values[-1][0]

    window: list[tuple[float, int]] = []
    calib_t0: float | None = None
    step = start_step
    last_metrics: dict[str, float] = {}
    if val_batches and not info["history"]:  # the untrained baseline: "validation loss falls" is measurable
        last_metrics = {**validate(model, val_batches, dev, t.loss_weights), "epoch": 0.0}
        info["history"].append({"step": 0, **last_metrics})
        tracker.log(last_metrics, 0, force=True)
    model.train()
    try:
        with _Stop() as stop:
            while step < stop_at:
                try:
                    batch = next(stream).to(dev, non_blocking=True)
                except Exception:
                    if stop.requested:  # a data worker got the signal first
                        status = "interrupted"
                        break
                    raise
                factor = lr_factor(step, total, t.warmup_steps, t.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = t.lr * factor
                out = losses(forward_model, batch, t.loss_weights, autocast)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                step += 1
                info["step"] = step
                now = time.monotonic()
                window = [*window[-19:], (now, batch.size)]
                if len(window) > 1:
                    rate = sum(s for _, s in window[1:]) / max(1e-9, window[-1][0] - window[0][0])
                info["elapsed_seconds"] = elapsed_before + (now - chunk_start)
                # per-step losses stay on the device and are read in groups (one sync per group on CUDA)
                pending.append(
                    (
                        step,
                        t.lr * factor,
                        rate,
                        out["loss"].detach(),
                        out["mse"].detach(),
                        out["pinball"].detach(),
                        grad_norm.detach(),
                    )
                )
                line_due = step % t.log_every == 0 or step >= stop_at
                if len(pending) >= SYNC_EVERY or line_due:
                    loss_value = flush_pending()
                if line_due:
                    progress_line(t.lr * factor)
                # steps: auto -> fix the schedule once throughput is known
                if info["total_steps"] is None:
                    if step == start_step + 5:
                        calib_t0 = now
                    elif calib_t0 is not None and step == start_step + 5 + t.calibration_steps:
                        per_step = (now - calib_t0) / t.calibration_steps
                        budget = t.time_budget_minutes * 60 * 0.9 - info["elapsed_seconds"]
                        info["total_steps"] = total = step + max(1, int(budget / per_step))
                        stop_at = min(total, start_step + max_steps) if max_steps else total
                        bar.total = total
                        log.info("steps: auto -> %d steps (%.1f ms/step)", total, per_step * 1e3)
                if not pending:
                    bar.update(step, loss_value, rate)
                # the wall-clock budget is a guard: when it fires, validate, keep the best weights, say so
                over_budget = (
                    t.time_budget_minutes is not None and info["elapsed_seconds"] >= t.time_budget_minutes * 60
                )
                if over_budget and step < total:
                    if not line_due:
                        loss_value = flush_pending()
                        progress_line(t.lr * factor)
                    log.warning(
                        "time guard: training.time_budget_minutes = %g reached at step %d of %d; training stops "
                        "early with the best validation weights so far (the model now depends on this machine's "
                        "speed and load; raise time_budget_minutes or lower steps for the fixed-step model)",
                        t.time_budget_minutes,
                        step,
                        total,
                    )
                    info["stopped"] = "time_budget"
                finished = step >= total or over_budget
                if (val_batches and step % validate_every == 0) or finished:
                    loss_value = flush_pending()
                if val_batches and (step % validate_every == 0 or finished):
                    metrics = validate(model, val_batches, dev, t.loss_weights)
                    metrics["epoch"] = step / schedule.batches_per_epoch
                    info["history"].append({"step": step, **metrics})
                    tracker.log(metrics, step, force=True)
                    last_metrics = metrics
                    if info["best_metric"] is None or metrics["val_loss"] < info["best_metric"]:
                        info["best_metric"], info["best_step"] = metrics["val_loss"], step
                        best = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                    log.info(_validation_line(step, info["total_steps"], metrics))
                    snapshot()
                    last_snapshot = time.monotonic()
                if finished:
                    break
                if stop.requested or (max_minutes is not None and now - chunk_start >= max_minutes * 60):
                    status = "interrupted" if stop.requested else "paused"
                    break
                if now - last_snapshot >= t.checkpoint_every_minutes * 60:
                    snapshot()
                    last_snapshot = time.monotonic()
            else:
                if step < total:
                    status = "paused"  # max_steps reached
    finally:
        flush_pending()
        bar.close()

    if status != "complete":
        snapshot()
        if status == "interrupted":
            tracker.end("KILLED")
        else:
            tracker.flush()
        log.info("%s at step %d/%s; state saved in %s", status, step, info["total_steps"], state_dir(out_dir))
        return TrainResult(status, step, int(info["total_steps"] or 0), metrics=last_metrics)

    # finished: the best validation weights (or the last ones) become the model
    if best is not None:
        model.load_state_dict(best)
    info["complete"] = True
    info.setdefault("stopped", "steps")
    snapshot()
    outcome = {
        "model": spec.name,
        "preset": spec.preset,
        "training": {
            **spec.to_dict()["training"],
            "steps_done": step,
            "total_steps": info["total_steps"],
            "best_step": info["best_step"],
            "best_val_loss": info["best_metric"],
            "stopped": info["stopped"],
            "elapsed_seconds": round(info["elapsed_seconds"], 2),
            "device": str(dev),
            "datasets_per_second": round(rate, 1),
        },
        "data": {
            **spec.to_dict()["data"],
            "train": train_src.describe(),
            "validation": val_src.describe() if val_src is not None else None,
            "splits": {
                name: config.split_config(name).model_dump(mode="json", exclude_none=True)
                for name in (spec.data.train_split, spec.data.validation_split)
                if name is not None
            },
        },
        "validation_history": info["history"],
        "config_fingerprint": fingerprint,
    }
    weights, config_json = save_checkpoint(model.cpu(), out_dir / "model.safetensors", outcome)
    tracker.log({"final_" + k: v for k, v in last_metrics.items()}, step, force=True)
    tracker.artifacts([weights, config_json])
    tracker.end("FINISHED")
    log.info(
        "finished %s: %d of %s steps in %s (stopped by: %s), best validation loss %s at step %s",
        spec.name,
        step,
        info["total_steps"],
        _clock(info["elapsed_seconds"]),
        "the time guard" if info["stopped"] == "time_budget" else info["stopped"],
        "n/a" if info["best_metric"] is None else f"{info['best_metric']:.4f}",
        info["best_step"],
    )
    log.info("wrote %s and %s", weights, config_json)
    return TrainResult("complete", step, int(info["total_steps"]), weights, config_json, last_metrics)


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
    splits = cfg.meta.splits if cfg.meta is not None else {}
    for key in ("train_split", "validation_split"):
        split = getattr(spec.data, key)
        if split is not None and split not in splits:
            raise ConfigError(
                f"config.models.{model}.data.{key}: no split {split!r} in config.meta.splits "
                f"(splits: {', '.join(splits) or 'none'})"
            )
    return train(spec, cfg, Path(out_root) / model, **kwargs)
