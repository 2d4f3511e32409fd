"""Variational lower bounds on I(X; Y), evaluated on stacked score matrices S (C, B, B).

``S[c, i, j] = T_c(x_i, y_j)``: the diagonal holds the B joint pairs, the B(B−1) off-diagonal entries are
pairs from the product of marginals p(x)p(y) (all pairs, as in Poole et al. 2019). Every critic is
parameterised so that its optimum is the log density ratio log p(x, y)/(p(x)p(y)) (up to a constant for
DV/InfoNCE); with E_P the mean over the diagonal and E_Q the mean over the off-diagonal:

* ``dv``      — Donsker–Varadhan: E_P[T] − log E_Q[e^T]  (Donsker & Varadhan 1983; Belghazi et al. 2018).
* ``mine``    — the DV value, trained with MINE's bias-corrected gradient: the denominator E_Q[e^T] of
  ∇ log E_Q[e^T] = E_Q[e^T ∇T] / E_Q[e^T] is replaced by an exponential moving average over batches
  (Belghazi et al. 2018, §3.2; decay 0.9 as in BMI and in Poole et al.'s code).
* ``nwj``     — Nguyen–Wainwright–Jordan / f-divergence (TUBA with a = e): 1 + E_P[T] − E_Q[e^T]
  (NWJ 2010; Poole et al. 2019 eq. 11, written for a critic whose optimum is the log ratio itself).
* ``infonce`` — E_i[T_ii − log (1/B) Σ_j e^{T_ij}] (van den Oord et al. 2018; Poole et al. eq. 12); it can
  never exceed log B, its ceiling.
* ``js``      — trains the critic with the Jensen–Shannon f-GAN objective E_P[−softplus(−T)] −
  E_Q[softplus(T)] (Nowozin et al. 2016; Hjelm et al. 2019), whose optimum is also the log ratio, and reads
  MI out with NWJ (Poole et al. 2019, the "JS" estimator) or DV.
* ``smile``   — trains like ``js``, reads out DV with the partition term clipped to [−τ, τ]:
  E_P[T] − log E_Q[clip(e^T, e^−τ, e^τ)] (Song & Ermon 2020, default τ = 5).

``train`` returns (objective, value): the objective is what gradients ascend, the value what is reported
(they differ for mine/js/smile). Both are per cell, shape (C,), so cells never mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BOUNDS = ("mine", "dv", "nwj", "infonce", "js", "smile")


#: Zeros appended to a per-cell vector (C,) before a transcendental op (see :func:`per_cell`).
LANE_PAD = 64


def per_cell(fn, *tensors: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to small per-cell tensors (C,) or (C, B), the same way whatever C and the cell's position.

    Why: PyTorch's CPU kernels run the SIMD version of exp/log/softplus on all but the last < 2 x lanes
    elements of a contiguous tensor, which take a scalar libm path that rounds differently (1 ulp). A cell's
    value would then depend on how many cells share its stack and where it sits, and Adam amplifies such ulps
    into differences of 1e-2 nats after thousands of steps. Padding with ``LANE_PAD`` rows of zeros puts every
    real element on the SIMD path; it costs nothing next to the (C, B, B) score matrices (whose tails the
    training loop's ghost cells cover).
    """
    c = tensors[0].shape[0]
    padded = [torch.cat([t, t.new_zeros((LANE_PAD, *t.shape[1:]))]) for t in tensors]
    return fn(*padded)[:c]


def logsumexp_rows(x: torch.Tensor) -> torch.Tensor:
    """log Σ e^x over the last dim of (C, N) or (C, B, N), stack-independent (``torch.logsumexp`` ends with a
    bare log over the small result)."""
    m = x.detach().amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    total = (x - m).exp().sum(-1)
    return per_cell(torch.log, total) + m.squeeze(-1)


def _diag_mean(s: torch.Tensor) -> torch.Tensor:
    return s.diagonal(dim1=1, dim2=2).mean(-1)


def _offdiag_logmeanexp(s: torch.Tensor) -> torch.Tensor:
    b = s.shape[-1]
    eye = torch.eye(b, dtype=torch.bool, device=s.device)
    return logsumexp_rows(s.masked_fill(eye, -math.inf).flatten(1)) - math.log(b * (b - 1))


def _offdiag_mean(values: torch.Tensor) -> torch.Tensor:
    b = values.shape[-1]
    total = values.sum(dim=(1, 2)) - values.diagonal(dim1=1, dim2=2).sum(-1)
    return total / (b * (b - 1))


def dv_value(s: torch.Tensor) -> torch.Tensor:
    return _diag_mean(s) - _offdiag_logmeanexp(s)


def nwj_value(s: torch.Tensor) -> torch.Tensor:
    return 1.0 + _diag_mean(s) - per_cell(torch.exp, _offdiag_logmeanexp(s))


def infonce_value(s: torch.Tensor) -> torch.Tensor:
    b = s.shape[-1]
    return (s.diagonal(dim1=1, dim2=2) - logsumexp_rows(s)).mean(-1) + math.log(b)


def js_objective(s: torch.Tensor) -> torch.Tensor:
    joint = per_cell(lambda d: F.softplus(-d), s.diagonal(dim1=1, dim2=2))
    return -joint.mean(-1) - _offdiag_mean(F.softplus(s))


@dataclass(frozen=True)
class Bound:
    """One bound with its options; hashable, so cells sharing a bound are grouped in a stack."""

    name: str
    ema_decay: float = 0.9  # mine
    tau: float | None = 5.0  # smile
    readout: str = "nwj"  # js

    def __post_init__(self) -> None:
        if self.name not in BOUNDS:
            raise ValueError(f"unknown bound {self.name!r}; known: {', '.join(BOUNDS)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.tau is not None and not self.tau > 0:
            raise ValueError(f"tau must be > 0 (or null for no clipping), got {self.tau}")
        if self.readout not in ("nwj", "dv"):
            raise ValueError(f"readout must be 'nwj' or 'dv', got {self.readout!r}")

    @property
    def stateful(self) -> bool:
        return self.name == "mine"

    def ceiling(self, batch: int) -> float | None:
        """Largest value the bound can report on a batch of ``batch`` pairs (InfoNCE: log B)."""
        return math.log(batch) if self.name == "infonce" else None

    def value(self, s: torch.Tensor) -> torch.Tensor:
        """The reported estimate on each cell's score matrix, shape (C,)."""
        if self.name in ("dv", "mine"):
            return dv_value(s)
        if self.name == "nwj":
            return nwj_value(s)
        if self.name == "infonce":
            return infonce_value(s)
        if self.name == "js":
            return nwj_value(s) if self.readout == "nwj" else dv_value(s)
        clipped = s if self.tau is None else s.clamp(-self.tau, self.tau)  # smile
        return _diag_mean(s) - _offdiag_logmeanexp(clipped)

    def train(
        self, s: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(objective to ascend, reported value, new state) per cell; ``state`` is MINE's log-EMA (C,)."""
        if self.name in ("js", "smile"):
            with torch.no_grad():
                value = self.value(s)
            return js_objective(s), value, state
        if self.name == "mine":
            joint = _diag_mean(s)
            lme = _offdiag_logmeanexp(s)
            batch_lme = lme.detach()
            if state is None:
                log_ema = batch_lme
            else:
                log_ema = per_cell(
                    torch.logaddexp,
                    state + math.log(self.ema_decay) if self.ema_decay > 0 else torch.full_like(state, -math.inf),
                    batch_lme + math.log1p(-self.ema_decay),
                )
            # d/dθ e^{lme − log_ema} = (E_Q[e^T]/EMA) ∇ lme = E_Q[e^T ∇T] / EMA: the corrected gradient
            objective = joint - per_cell(torch.exp, lme - log_ema)
            return objective, (joint - lme).detach(), log_ema
        value = self.value(s)
        return value, value.detach(), state
