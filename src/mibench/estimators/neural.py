"""Neural variational estimators: ``mine``, ``dv``, ``nwj``, ``infonce``, ``js``, ``smile``.

All six share one training loop (:mod:`mibench.variational.fit`) and differ only in the bound
(:mod:`mibench.variational.bounds`). Each estimate splits the sample into a training and a held-out part,
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

from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from mibench.config.learned import DEVICE_PATTERN
from mibench.estimators.base import Estimate, Estimator, EstimatorParams, check_inputs, register_estimator


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


class NeuralParams(EstimatorParams):
    """Hyperparameters shared by the six bounds (defaults and their sources: the module docstring)."""

    critic: Literal["concat", "separable"] = Field("concat", description="Critic: MLP on [x, y], or g(x)ᵀh(y).")
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [16, 8], description="Hidden layer widths of the critic MLP(s)."
    )
    embed_dim: int = Field(32, ge=1, description="Embedding size of the separable critic.")
    activation: Literal["relu", "elu", "gelu", "tanh", "leaky_relu", "softplus"] = Field(
        "relu", description="Non-linearity of the critic's hidden layers."
    )
    batch_size: int = Field(256, ge=2, description="Pairs per mini-batch (InfoNCE's ceiling is log of it).")
    steps: int = Field(10_000, ge=1, description="Most optimizer steps (early stopping usually ends sooner).")
    learning_rate: float = Field(0.1, gt=0, description="Adam learning rate.")
    test_fraction: float = Field(0.5, gt=0, lt=1, description="Held-out share of the sample the bound is read on.")
    eval_every: int = Field(250, ge=1, description="Steps between held-out evaluations.")
    patience: Annotated[int, Field(ge=0)] | None = Field(
        2, description="Evaluations without a new best before stopping (null: never stop early)."
    )
    smooth_window: int = Field(5, ge=1, description="Evaluations averaged by the max_smoothed_test read-out.")
    readout: Literal["max_smoothed_test", "max_test", "final_test"] = Field(
        "max_smoothed_test", description="Which held-out value is reported."
    )
    standardize: bool | Literal["rank"] = Field(
        True, description="Standardise X and Y with training-split statistics; `rank`: normal scores of ranks."
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="Precision of the critics' training.")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto, cpu, cuda or cuda:N.")
    cells_per_stack: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="Cells trained together in one stack (auto: what fits the memory budget)."
    )


class NeuralEstimator(Estimator):
    """Base of the six variational estimators; subclasses set ``name``, ``bound`` and their ``Params``."""

    bound: ClassVar[str]
    #: fields of ``Params`` that configure the bound (passed to :class:`mibench.variational.Bound`)
    bound_options: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[EstimatorParams]] = NeuralParams
    min_n = 8

    def setup(self) -> None:
        from mibench.devices import resolve_device
        from mibench.variational import Bound, CriticSpec, TrainConfig

        hp, who = self.hp, self.name
        try:
            self.spec = CriticSpec(
                kind=hp.critic, hidden=tuple(hp.hidden), embed_dim=hp.embed_dim, activation=hp.activation
            )
        except ValueError as exc:
            raise ValueError(f"{who}: {exc}") from None
        self.config = TrainConfig(
            batch_size=hp.batch_size,
            steps=hp.steps,
            learning_rate=hp.learning_rate,
            eval_every=hp.eval_every,
            patience=hp.patience,
            smooth_window=hp.smooth_window,
            readout=hp.readout,
            dtype=hp.dtype,
        )
        self.test_fraction = hp.test_fraction
        self.standardize: bool | str = hp.standardize
        self.cells_per_stack = hp.cells_per_stack
        bound_opts = {k: getattr(hp, k) for k in type(self).bound_options}
        if "readout_bound" in bound_opts:
            bound_opts["readout"] = bound_opts.pop("readout_bound")
        try:
            self.bound_obj = Bound(self.bound, **bound_opts)
        except ValueError as exc:
            raise ValueError(f"{who}: {exc}") from None
        try:
            self.device: str = resolve_device(hp.device)
        except ValueError as exc:
            raise ValueError(f"{who}: {exc}") from None

    # -- data preparation ---------------------------------------------------------------------------
    def _prepare(self, x: np.ndarray, y: np.ndarray, seed: int):
        """Split into training/held-out rows (seeded) and standardise with training-split statistics."""
        from mibench.variational import Cell
        from mibench.variational.fit import _stream_seed

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
        from mibench.variational import batch_sizes

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
        from mibench.variational import fit_cells

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
        from mibench.variational import fit_cells

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
                        if results[i] is not None:  # already reported through on_result: not trained twice
                            continue
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
    bound_options = ("ema_decay",)

    class Params(NeuralParams):
        ema_decay: float = Field(0.9, ge=0, lt=1, description="Moving-average decay of E_Q[e^T].")


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
    bound_options = ("readout_bound",)

    class Params(NeuralParams):
        readout_bound: Literal["nwj", "dv"] = Field("nwj", description="Bound the JS-trained critic is read with.")


@register_estimator
class SMILE(NeuralEstimator):
    """SMILE (Song & Ermon 2020): JS-trained critic, DV read-out with e^T clipped to [e^−τ, e^τ]."""

    name = "smile"
    bound = "smile"
    bound_options = ("tau",)

    class Params(NeuralParams):
        tau: Annotated[float, Field(gt=0)] | None = Field(5.0, description="Clip e^T to [e^-τ, e^τ] (null: none).")
