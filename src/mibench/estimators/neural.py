"""Neural variational estimators: ``mine``, ``dv``, ``nwj``, ``infonce``, ``js``, ``smile``.

All six share one training loop (:mod:`mibench.neural.train`) and differ only in the bound
(:mod:`mibench.neural.bounds`). Each estimate splits the sample into a training and a held-out part,
trains a critic on mini-batches of the training part, evaluates the bound on the held-out part every
``eval_every`` steps, and reports the held-out value at the best point of the smoothed held-out curve; the
training-split value at that point is reported too (``extras``), so over-fitting shows as a gap.

Defaults and where they come from (every one is a constructor keyword, so config entries override them
and the runner records them; see docs/neural.md):

=====================  ==================  ==========================================================
hyperparameter         default             source
=====================  ==================  ==========================================================
critic, hidden         concat, [16, 8]     BMI (Czyż et al. 2023) neural defaults: ReLU MLP (16, 8)
batch_size             256                 BMI
steps                  10 000              BMI (upper bound; early stopping usually ends sooner)
learning_rate          0.1                 BMI (Adam); Poole et al./Song & Ermon use 5e-4 with 256-unit critics
test_fraction          0.5                 BMI (train_test_split = 0.5)
eval_every, patience   250, 2              BMI (test every 250 steps, stop after 2 evaluations without a new best)
readout, smooth_window max_smoothed_test, 5 Abdelaleem et al. 2025 (max *smoothed* test MI); BMI: max_test
standardize            true                BMI (standardise X and Y; here with training-split statistics);
                                           ``rank``: normal scores of the training split's ranks, for heavy tails
embed_dim              32                  Poole et al. 2019 separable critic
ema_decay (mine)       0.9                 BMI / Poole et al. code (MINE's moving average)
tau (smile)            5.0                 Song & Ermon 2020
readout_bound (js)     nwj                 Poole et al. 2019 (JS-trained critic, NWJ read-out)
=====================  ==================  ==========================================================

``device``: ``auto`` (``$MIBENCH_DEVICE`` if set, else CUDA when available, else CPU), ``cpu``, ``cuda``
or ``cuda:N``; :attr:`device` is the one actually used. ``estimate_many`` trains the critics of many cells
at once (stacked weights, batched matmuls); on the CPU its results equal the one-cell path bit for bit,
whatever the stack (docs/neural.md, "Many cells at once").
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from mibench.estimators.base import Estimate, Estimator, check_inputs, register_estimator

COMMON_DEFAULTS: dict[str, Any] = {
    "critic": "concat",
    "hidden": [16, 8],
    "embed_dim": 32,
    "activation": "relu",
    "batch_size": 256,
    "steps": 10_000,
    "learning_rate": 0.1,
    "test_fraction": 0.5,
    "eval_every": 250,
    "patience": 2,
    "smooth_window": 5,
    "readout": "max_smoothed_test",
    "standardize": True,
    "dtype": "float32",
    "device": "auto",
    "cells_per_stack": "auto",
}


def _int(name: str, value: Any, low: int, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{who}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _float(name: str, value: Any, who: str, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not low < value < high:
        raise ValueError(f"{who}: {name} must be a number in ({low:g}, {high:g}), got {value!r}")
    return float(value)


def rank_scores(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, normal scores of the mid-ranks within the training rows; held-out rows go through the same
    empirical CDF (so the held-out split stays unseen). Monotone per coordinate, hence MI-preserving, and
    bounded: heavy tails (Student-t with ν = 1) no longer blow up an unbounded bound's exponentials."""
    from scipy.special import ndtri

    n = train.shape[0]
    out = []
    for rows in (train, test):
        scores = np.empty_like(rows)
        for c in range(rows.shape[1]):
            s = np.sort(train[:, c])
            mid = 0.5 * (np.searchsorted(s, rows[:, c], "left") + np.searchsorted(s, rows[:, c], "right"))
            scores[:, c] = ndtri((mid + 0.5) / (n + 1))
        out.append(scores)
    return out[0], out[1]


class NeuralEstimator(Estimator):
    """Base of the six variational estimators; subclasses set ``name``, ``bound`` and ``bound_defaults``."""

    bound: ClassVar[str]
    bound_defaults: ClassVar[dict[str, Any]] = {}
    min_n = 8

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        defaults = {**COMMON_DEFAULTS, **cls.bound_defaults}

        def __init__(self: NeuralEstimator, **params: Any) -> None:
            NeuralEstimator._setup(self, defaults, params)

        # an explicit signature, so `hyperparameters()` and config validation see every hyperparameter
        __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in defaults.items()]
        )
        __init__.__doc__ = f"{cls.__name__}: hyperparameters (defaults) {defaults}"
        cls.__init__ = __init__  # type: ignore[method-assign]

    def _setup(self, defaults: dict[str, Any], params: dict[str, Any]) -> None:
        unknown = sorted(set(params) - set(defaults))
        if unknown:
            raise TypeError(f"unexpected hyperparameter(s) {unknown}; accepted: {', '.join(defaults)}")
        p = {**defaults, **params}
        if isinstance(p["hidden"], tuple):
            p["hidden"] = list(p["hidden"])
        super().__init__(**p)  # records every value, defaults included
        self._validate(p)

    def _validate(self, p: dict[str, Any]) -> None:
        from mibench.neural import READOUTS, Bound, CriticSpec, TrainConfig, resolve_device

        who = self.name
        if not isinstance(p["hidden"], list) or not all(isinstance(h, int) and h >= 1 for h in p["hidden"]):
            raise ValueError(f"{who}: hidden must be a list of layer widths >= 1, got {p['hidden']!r}")
        try:
            self.spec = CriticSpec(
                kind=str(p["critic"]),
                hidden=tuple(p["hidden"]),
                embed_dim=_int("embed_dim", p["embed_dim"], 1, who),
                activation=str(p["activation"]),
            )
        except ValueError as exc:
            raise ValueError(f"{who}: {exc}") from None
        if p["readout"] not in READOUTS:
            raise ValueError(f"{who}: readout must be one of {', '.join(READOUTS)}, got {p['readout']!r}")
        patience = p["patience"]
        if patience is not None:
            patience = _int("patience", patience, 0, who)
        self.config = TrainConfig(
            batch_size=_int("batch_size", p["batch_size"], 2, who),
            steps=_int("steps", p["steps"], 1, who),
            learning_rate=_float("learning_rate", p["learning_rate"], who),
            eval_every=_int("eval_every", p["eval_every"], 1, who),
            patience=patience,
            smooth_window=_int("smooth_window", p["smooth_window"], 1, who),
            readout=p["readout"],
            dtype=p["dtype"],
        )
        if p["dtype"] not in ("float32", "float64"):
            raise ValueError(f"{who}: dtype must be 'float32' or 'float64', got {p['dtype']!r}")
        self.test_fraction = _float("test_fraction", p["test_fraction"], who, 0.0, 1.0)
        if p["standardize"] not in (True, False, "rank"):
            raise ValueError(f"{who}: standardize must be true, false or 'rank', got {p['standardize']!r}")
        self.standardize: bool | str = p["standardize"]
        cps = p["cells_per_stack"]
        self.cells_per_stack = "auto" if cps == "auto" else _int("cells_per_stack", cps, 1, who)
        bound_opts = {k: p[k] for k in type(self).bound_defaults}
        if "readout_bound" in bound_opts:
            bound_opts["readout"] = bound_opts.pop("readout_bound")
        try:
            self.bound_obj = Bound(self.bound, **bound_opts)
        except ValueError as exc:
            raise ValueError(f"{who}: {exc}") from None
        try:
            self.device: str = resolve_device(p["device"])
        except ValueError as exc:
            raise ValueError(f"{who}: {exc}") from None

    # -- data preparation ---------------------------------------------------------------------------
    def _prepare(self, x: np.ndarray, y: np.ndarray, seed: int):
        """Split into training/held-out rows (seeded) and standardise with training-split statistics."""
        from mibench.neural import Cell
        from mibench.neural.train import _stream_seed

        n = x.shape[0]
        n_test = min(max(round(n * self.test_fraction), 2), n - 2)
        perm = np.random.default_rng(_stream_seed(seed, 0)).permutation(n)
        test, train = perm[:n_test], perm[n_test:]
        x_tr, y_tr, x_te, y_te = x[train], y[train], x[test], y[test]
        if self.standardize == "rank":
            x_tr, x_te = rank_scores(x_tr, x_te)
            y_tr, y_te = rank_scores(y_tr, y_te)
        elif self.standardize:
            for a, b in ((x_tr, x_te), (y_tr, y_te)):
                mean, std = a.mean(0), a.std(0)
                std[std == 0] = 1.0
                a -= mean
                a /= std
                b -= mean
                b /= std
        return Cell(x_tr, y_tr, x_te, y_te, seed=int(seed), bound=self.bound_obj)

    def _key(self, cell) -> tuple[int, int, int, int]:
        from mibench.neural import batch_sizes

        b_train, b_eval = batch_sizes(cell.x_train.shape[0], cell.x_test.shape[0], self.config.batch_size)
        return cell.x_train.shape[1], cell.y_train.shape[1], b_train, b_eval

    def _stack_size(self, key: tuple[int, int, int, int]) -> int:
        """Cells per stack: configured, or what fits a memory budget (¼ of free GPU memory, 512 MiB on CPU)."""
        if self.cells_per_stack != "auto":
            return int(self.cells_per_stack)
        _, _, b_train, b_eval = key
        width = sum(self.spec.hidden) + (self.spec.embed_dim if self.spec.kind == "separable" else 0)
        pairs = max(b_train, b_eval) ** 2
        per_cell = 4 * (pairs * (4 * width + 4) if self.spec.kind == "concat" else pairs * 4 + 8 * b_train * width)
        budget = 512 * 2**20
        if self.device.startswith("cuda"):
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(self.device))
            budget = free // 4
        cap = 1024 if self.device.startswith("cuda") else 64
        return int(max(1, min(cap, budget // max(per_cell, 1))))

    def _estimate_from(self, result) -> Estimate:
        extras = {**result.extras, "critic": self.spec.kind, "device": self.device}
        return Estimate(value=result.value, extras=extras)

    # -- the interface --------------------------------------------------------------------------------
    def estimate(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> Estimate:
        from mibench.neural import fit_cells

        result = fit_cells([self._prepare(x, y, seed)], self.spec, self.config, device=self.device)[0]
        if isinstance(result, BaseException):
            raise result
        return self._estimate_from(result)

    def estimate_many(
        self,
        samples: Sequence[tuple[np.ndarray, np.ndarray]],
        seeds: Sequence[int],
        *,
        on_result: Callable[[int, Estimate | BaseException], None] | None = None,
    ) -> list[Estimate | BaseException]:
        """Train the critics of many cells at once: cells with equal dims and batch sizes share a stack.

        A failing cell (bad input, diverged training) gets its exception in its slot; if a whole stack
        fails (e.g. out of GPU memory), its cells are retried one by one. ``on_result(i, result)`` reports
        each cell as soon as it is read out (the runner keeps those if the call is interrupted later).
        """
        from mibench.neural import fit_cells

        if len(samples) != len(seeds):
            raise ValueError(f"{self.name}: {len(samples)} samples but {len(seeds)} seeds")
        results: list[Estimate | BaseException | None] = [None] * len(samples)

        def done(i: int, out: Any) -> None:
            results[i] = out if isinstance(out, BaseException) else self._estimate_from(out)
            if on_result is not None:
                on_result(i, results[i])  # type: ignore[arg-type]

        groups: dict[tuple[int, int, int, int], list[tuple[int, Any]]] = {}
        for i, ((x, y), seed) in enumerate(zip(samples, seeds, strict=True)):
            try:
                x, y = check_inputs(x, y, min_n=self.min_n, reject_constant=self.reject_constant_columns, who=self.name)
                cell = self._prepare(x, y, seed)
                groups.setdefault(self._key(cell), []).append((i, cell))
            except Exception as exc:
                done(i, exc)
        for key, members in groups.items():
            size = self._stack_size(key)
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                try:
                    outs = fit_cells(
                        [c for _, c in chunk],
                        self.spec,
                        self.config,
                        device=self.device,
                        on_result=lambda j, out, chunk=chunk: done(chunk[j][0], out),
                    )
                    for (i, _), out in zip(chunk, outs, strict=True):
                        if results[i] is None:
                            done(i, out)
                except Exception:
                    for i, cell in chunk:
                        try:
                            done(i, fit_cells([cell], self.spec, self.config, device=self.device)[0])
                        except Exception as exc:
                            done(i, exc)
        return [r if r is not None else RuntimeError("cell was not estimated") for r in results]


@register_estimator
class MINE(NeuralEstimator):
    """MINE (Belghazi et al. 2018): DV bound, gradient denominator from a moving average of E_Q[e^T]."""

    name = "mine"
    bound = "mine"
    bound_defaults: ClassVar[dict[str, Any]] = {"ema_decay": 0.9}


@register_estimator
class DV(NeuralEstimator):
    """Donsker–Varadhan bound E_P[T] − log E_Q[e^T] with its plain (biased) mini-batch gradient."""

    name = "dv"
    bound = "dv"


@register_estimator
class NWJ(NeuralEstimator):
    """NWJ / f-divergence bound 1 + E_P[T] − E_Q[e^T] (Nguyen, Wainwright & Jordan 2010)."""

    name = "nwj"
    bound = "nwj"


@register_estimator
class InfoNCE(NeuralEstimator):
    """InfoNCE (van den Oord et al. 2018): ≤ log(batch); the ceiling is reported as ``log_batch_ceiling``."""

    name = "infonce"
    bound = "infonce"


@register_estimator
class JS(NeuralEstimator):
    """Critic trained with the Jensen–Shannon f-GAN objective, MI read out with NWJ (or DV)."""

    name = "js"
    bound = "js"
    bound_defaults: ClassVar[dict[str, Any]] = {"readout_bound": "nwj"}


@register_estimator
class SMILE(NeuralEstimator):
    """SMILE (Song & Ermon 2020): JS-trained critic, DV read-out with e^T clipped to [e^−τ, e^τ]."""

    name = "smile"
    bound = "smile"
    bound_defaults: ClassVar[dict[str, Any]] = {"tau": 5.0}
