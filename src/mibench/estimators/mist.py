"""Learned estimators ``mist`` (point head, MSE-trained) and ``mist_qr`` (quantile head, pinball-trained).

Both read a checkpoint written by ``mibench train`` / the ``train_model`` rule (hyperparameter ``checkpoint``:
the ``.safetensors`` path; the estimate rule declares it as an input, which makes the DAG edge
train -> estimate). :meth:`estimate_many` runs one forward pass per size bucket over a whole list of cells.
torch is imported inside methods so that importing the estimator package stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from mibench.config.learned import DEVICE_PATTERN
from mibench.config.schema import DEFAULT_LEVELS, Level, central_taus
from mibench.estimators.base import Estimate, Estimator, EstimatorParams, check_inputs, register_estimator
from mibench.estimators.bootstrap import taus_for_levels


class _Learned(Estimator):
    min_n = 2
    #: cells the benchmark runner hands to one estimate_many call (memory is bounded by max_cells per pass)
    batch_cells = 2048
    # a constant column is just an uninformative one for a rank-based model (normal score 0)
    reject_constant_columns = False

    class Params(EstimatorParams):
        checkpoint: str = Field(description="Weights of a trained model (`results/models/<model>/model.safetensors`).")
        device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto, cpu, cuda or cuda:N.")
        max_cells: int = Field(1 << 21, ge=1, description="Most (row x column) cells in one forward pass (memory).")
        levels: Annotated[list[Level], Field(min_length=1)] = Field(
            default_factory=lambda: list(DEFAULT_LEVELS), description="Central interval levels reported."
        )

    def setup(self) -> None:
        import torch

        from mibench.devices import resolve_device
        from mibench.learned.infer import cached_model

        self._device = torch.device(resolve_device(self.hp.device))
        self.device = str(self._device)
        self.max_cells = self.hp.max_cells
        self.levels = tuple(self.hp.levels)
        self.model, self.checkpoint_config = cached_model(self.hp.checkpoint, self._device)
        self.taus = [round(t, 10) for t in self.model.arch.taus]

    def _predict(self, samples: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        from mibench.learned.infer import predict

        return predict(self.model, samples, self._device, self.max_cells)

    def _extras(self) -> dict[str, Any]:
        return {"checkpoint_sha256": str(self.checkpoint_config["weights_sha256"])[:16]}

    def estimate(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> Estimate:
        return self._from_outputs([(x, y)], [seed])[0]

    def _from_outputs(self, samples, seed) -> list[Estimate]:  # pragma: no cover - interface
        raise NotImplementedError

    def estimate_many(
        self,
        samples: Sequence[tuple[np.ndarray, np.ndarray]],
        seeds: Sequence[int],
        *,
        on_result: Callable[[int, Estimate | BaseException], None] | None = None,
    ) -> list[Estimate | BaseException]:
        """Validate every sample, then estimate all valid ones in size-bucketed batched forward passes.

        ``on_result`` hears of every cell once the forward passes are done (they are not interruptible).
        """
        results: list[Estimate | BaseException | None] = [None] * len(samples)
        valid, positions = [], []
        for i, (x, y) in enumerate(samples):
            try:
                valid.append(check_inputs(x, y, min_n=self.min_n, reject_constant=False, who=self.name))
                positions.append(i)
            except Exception as exc:
                results[i] = exc
        if valid:
            try:
                estimates = self._from_outputs(valid, [seeds[i] for i in positions])
                for i, est in zip(positions, estimates, strict=True):
                    results[i] = est
            except Exception as exc:  # e.g. out of memory: every remaining slot records it
                for i in positions:
                    results[i] = exc
        if on_result is not None:
            for i, result in enumerate(results):
                on_result(i, result)  # type: ignore[arg-type]
        return results  # type: ignore[return-value]


@register_estimator
class MIST(_Learned):
    """MIST point estimate (MSE head); optional batched percentile bootstrap (``resamples`` > 0)."""

    name = "mist"

    class Params(_Learned.Params):
        resamples: int = Field(0, ge=0, description="Row resamples of a batched percentile bootstrap (0: none).")

    def setup(self) -> None:
        super().setup()
        self.resamples = self.hp.resamples
        self.boot_taus = taus_for_levels(self.levels)

    def _from_outputs(self, samples, seeds) -> list[Estimate]:
        if self.resamples <= 0:
            points, _ = self._predict(samples)
            return [Estimate(float(p), extras=self._extras()) for p in points]
        # point on the full sample + `resamples` row resamples of every sample, all in one batched pass
        expanded = []
        for (x, y), seed in zip(samples, seeds, strict=True):
            rng = np.random.default_rng([int(seed), 0xB007])
            expanded.append((x, y))
            for _ in range(self.resamples):
                idx = rng.integers(0, x.shape[0], size=x.shape[0])
                expanded.append((x[idx], y[idx]))
        points, _ = self._predict(expanded)
        out = []
        stride = self.resamples + 1
        top = max(self.levels)
        for s in range(len(samples)):
            point, boots = points[s * stride], points[s * stride + 1 : (s + 1) * stride]
            qs = dict(zip(self.boot_taus, map(float, np.quantile(boots, self.boot_taus)), strict=True))
            lo, hi = central_taus(top)
            interval = (qs[lo], qs[hi])
            extras = {**self._extras(), "bootstrap_resamples": self.resamples}
            out.append(Estimate(float(point), interval=interval, level=top, quantiles=qs, extras=extras))
        return out


@register_estimator
class MISTQR(_Learned):
    """MIST-QR: the median as the value, native quantiles at the trained τ grid, interval at max(levels)."""

    name = "mist_qr"

    def setup(self) -> None:
        super().setup()
        missing = [t for t in taus_for_levels(self.levels) if t not in self.taus]
        if missing:
            raise ValueError(
                f"mist_qr: checkpoint {self.hp.checkpoint} was trained on τ grid {self.taus}, which lacks {missing} "
                f"needed for central intervals at levels {list(self.levels)}"
            )

    def _from_outputs(self, samples, seeds) -> list[Estimate]:
        _, quantiles = self._predict(samples)
        top = max(self.levels)
        lo, hi = (self.taus.index(t) for t in central_taus(top))
        median = self.taus.index(0.5)
        return [
            Estimate(
                float(q[median]),
                interval=(float(q[lo]), float(q[hi])),
                level=top,
                quantiles={t: float(v) for t, v in zip(self.taus, q, strict=True)},
                extras=self._extras(),
            )
            for q in quantiles
        ]
