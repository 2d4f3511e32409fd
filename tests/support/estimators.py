"""Estimators used only by the tests: a cheap real one and deliberately broken ones.

Loaded by config entries with ``module: tests.support.estimators`` (the repository root is on PYTHONPATH in
the tests), which also exercises the ``module:`` mechanism for estimators living outside the package.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import numpy as np
from scipy.stats import norm

from mibench.estimators import ESTIMATORS, Estimate, Estimator, EstimatorParams, Field, register_estimator


def _register(cls):
    return cls if cls.name in ESTIMATORS else register_estimator(cls)


@_register
class FirstColumnCorrelation(Estimator):
    """-½ log(1 - r²) of the first columns' Pearson r, with a Fisher-z normal interval (exact for 1x1 Gaussians)."""

    name = "first_column_corr"

    class Params(EstimatorParams):
        clip: float = Field(0.999999, gt=0, lt=1, description="Largest |r| used (keeps the MI finite).")

    def setup(self) -> None:
        self.clip = self.hp.clip

    def estimate(self, x, y, *, seed):
        n = x.shape[0]
        r = float(np.clip(np.corrcoef(x[:, 0], y[:, 0])[0, 1], -self.clip, self.clip))
        se = 1.0 / math.sqrt(max(n - 3, 1))
        z = math.atanh(abs(r))

        def mi(zz: float) -> float:
            rr = math.tanh(max(zz, 0.0))
            return -0.5 * math.log(1 - rr * rr)

        taus = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)
        quantiles = {t: mi(z + norm.ppf(t) * se) for t in taus}
        return Estimate(
            mi(z), interval=(quantiles[0.025], quantiles[0.975]), level=0.95, quantiles=quantiles, extras={"r": r}
        )


@_register
class AlwaysFails(Estimator):
    name = "always_fails"

    def estimate(self, x, y, *, seed):
        raise RuntimeError("deliberate failure for the tests")


@_register
class FailsOnOddSeeds(Estimator):
    name = "fails_on_odd_seeds"

    def estimate(self, x, y, *, seed):
        if seed % 2:
            raise ValueError(f"odd seed {seed}")
        return Estimate(0.0)


@_register
class Sleepy(Estimator):
    """Sleeps ``seconds`` per cell (to exceed time budgets) and returns 0."""

    name = "sleepy"

    class Params(EstimatorParams):
        seconds: float = Field(1.0, ge=0, description="Sleep per cell.")

    def setup(self) -> None:
        self.seconds = self.hp.seconds

    def estimate(self, x, y, *, seed):
        time.sleep(self.seconds)
        return Estimate(0.0)


@_register
class ReturnsNaN(Estimator):
    name = "returns_nan"

    def estimate(self, x, y, *, seed):
        return Estimate(float("nan"))


@_register
class ReturnsInf(Estimator):
    name = "returns_inf"

    def estimate(self, x, y, *, seed):
        return Estimate(float("inf"))


@_register
class Faulty(FirstColumnCorrelation):
    """The correlation estimator, except on cells whose seed is in ``seeds`` (all cells if empty), where it:

    * ``raise``: raises; ``inf``: returns +inf;
    * ``python_hang``: spins forever in Python (SIGALRM interrupts it);
    * ``swallow``: sleeps in a loop that catches ``Exception`` (a timeout must not be swallowed);
    * ``c_hang``: loops forever in C holding the GIL (no signal handler runs: only the hard-limit watchdog helps);
    * ``segfault``: reads address 0; ``exit``: ``os._exit(3)`` (a silent death, like SIGKILL).

    ``MIBENCH_TEST_FAULTS=off`` disarms it: the fault-free reference run of the same configuration.
    """

    name = "faulty"

    class Params(FirstColumnCorrelation.Params):
        fault: Literal["raise", "inf", "python_hang", "swallow", "c_hang", "segfault", "exit"] = Field(
            "raise", description="What goes wrong on the chosen cells."
        )
        seeds: list[int] = Field(default_factory=list, description="Cells (by seed) that fault; empty: all.")

    def setup(self) -> None:
        self.clip, self.fault, self.seeds = self.hp.clip, self.hp.fault, set(self.hp.seeds)

    def estimate(self, x, y, *, seed):
        import os

        if os.environ.get("MIBENCH_TEST_FAULTS") == "off" or (self.seeds and seed not in self.seeds):
            return super().estimate(x, y, seed=seed)
        if self.fault == "raise":
            raise RuntimeError(f"deliberate failure on seed {seed}")
        if self.fault == "inf":
            return Estimate(float("inf"))
        if self.fault == "python_hang":
            while True:
                pass
        if self.fault == "swallow":
            for _ in range(200):
                try:
                    time.sleep(0.05)
                except Exception:  # the point: sloppy estimator code must not eat the timeout
                    pass
            return Estimate(0.0)
        if self.fault == "c_hang":
            import collections
            import itertools

            collections.deque(itertools.count(), maxlen=0)  # never returns, never checks for signals
        if self.fault == "segfault":
            import ctypes

            ctypes.string_at(0)
        if self.fault == "exit":
            os._exit(3)
        raise ValueError(f"unknown fault {self.fault!r}")


@_register
class BatchedSleepy(Estimator):
    """A batched estimator whose cells run together, like a stack of critics (``estimate_many``).

    Cell i needs ``seconds`` of compute, or ``slow_seconds`` if its n equals ``slow_n``; while u cells are
    unfinished each advances at 1/u of the wall clock (so the call lasts about the sum of the needs). Each
    cell is reported through ``on_result`` the moment it is done; its value is ``n / 1000``.
    ``MIBENCH_TEST_FAULTS=off`` makes every cell fast: the fault-free reference run of the same configuration.
    """

    name = "batched_sleepy"

    class Params(EstimatorParams):
        seconds: float = Field(0.05, ge=0, description="Compute a normal cell needs.")
        slow_seconds: float = Field(1.0, ge=0, description="Compute a slow cell needs.")
        slow_n: int | None = Field(None, ge=2, description="The n of the slow cells (none: no slow cell).")

    def setup(self) -> None:
        self.seconds, self.slow_seconds, self.slow_n = self.hp.seconds, self.hp.slow_seconds, self.hp.slow_n

    def estimate(self, x, y, *, seed):
        return self.estimate_many([(x, y)], [seed])[0]

    def need(self, n: int) -> float:
        import os

        slow = self.slow_n is not None and n == self.slow_n and os.environ.get("MIBENCH_TEST_FAULTS") != "off"
        return self.slow_seconds if slow else self.seconds

    def estimate_many(self, samples, seeds, *, on_result=None):
        needs = [self.need(len(x)) for x, _ in samples]
        done = [0.0] * len(samples)
        results = [None] * len(samples)
        last = time.perf_counter()
        while any(r is None for r in results):
            time.sleep(0.005)
            now = time.perf_counter()
            running = [i for i, r in enumerate(results) if r is None]
            for i in running:
                done[i] += (now - last) / len(running)
            last = now
            for i in running:
                if done[i] >= needs[i]:
                    results[i] = Estimate(len(samples[i][0]) / 1000, extras={"need": needs[i]})
                    if on_result is not None:
                        on_result(i, results[i])
        return results


@_register
class SilentBatchedSleepy(BatchedSleepy):
    """:class:`BatchedSleepy` that cannot report cells early (like one forward pass): all or nothing."""

    name = "silent_batched_sleepy"

    def estimate_many(self, samples, seeds):
        return super().estimate_many(samples, seeds)
