"""Statistical-consistency checks that work around *any* registered estimator.

Two tools, both from the "does this estimate deserve trust?" literature:

1. :class:`Consistent` (registered as ``consistent``) — the subsampling/extrapolation protocol of
   Abdelaleem, Martini & Nemenman (2025, arXiv 2506.00330), which builds on Holmes & Nemenman (2019).
   For γ = 1 … ``max_gamma`` the sample is split at random into γ disjoint subsets of N/γ rows and the
   inner estimator runs on each. An estimator whose bias is O(1/N) puts the subset means on a straight line
   in 1/N_γ (N_γ = N/γ); the line's intercept is the extrapolated infinite-data MI, its standard error gives
   a 68% interval, and if too few γ points lie on the line (within ``z_tolerance`` error bars) the
   estimate is flagged ``consistent: false`` — the sample size is not in the estimator's asymptotic regime.
   Error bars: the spread of the γ subset estimates gives the variance of one estimate at N/γ rows; assuming
   it scales as 1/N_γ (Holmes & Nemenman 2019), all γ share one pooled constant c, and the mean at γ has
   error bar √(c / (N_γ · γ)) ≈ √(c/N). The line is a weighted least-squares fit. Because every γ reuses the
   same N rows, the points share a common-mode error (that of one estimate on all N rows, c/N), so the
   intercept's variance is c/N plus the fit's extrapolation variance scaled by the observed scatter.
   For neural inner estimators the "best smoothed test MI epoch" step of the protocol is their default
   read-out (``readout: max_smoothed_test``), and their ``estimate_many`` trains all subsets of equal size
   in one stack.

2. :func:`self_consistency_checks` — the cheap checks of Song & Ermon (2020, §6): independence
   (I(X; Y_shuffled) = 0), data processing (I([X, X']; Y) = I(X; Y) for X' = X plus independent noise, a
   redundant copy), and additivity (I([X1, X2]; [Y1, Y2]) = 2·I(X; Y) for two independent halves of the
   sample). ``mibench consistency-check`` prints them for any estimator on any task.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from mibench.estimators.base import Estimate, Estimator, EstimatorParams, register_estimator

#: z of a central 68% normal interval (Φ⁻¹(0.84)).
Z68 = 0.994457883209753


def _normal_ppf(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def _subseed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *keys]).generate_state(1)[0])


def fit_extrapolation(points: Sequence[Mapping[str, float]], n: int, *, z_tolerance: float = 2.0) -> dict[str, Any]:
    """Weighted linear fit of subset means against 1/N_γ; intercept = MI at infinite data.

    ``points``: dicts with ``gamma``, ``n_subset``, ``count`` (successful subsets), ``mean``, ``sd``
    (sample std of the subset estimates, NaN for a single subset). Returns intercept, slope, their
    standard errors, χ²/dof and the per-point residuals/on-line flags.
    """
    pts = sorted(points, key=lambda p: p["gamma"])
    spread = [(p["count"] - 1, p["sd"] ** 2 * p["n_subset"]) for p in pts if p["count"] >= 2 and math.isfinite(p["sd"])]
    if not spread:
        raise ValueError("no γ with at least two successful subsets: cannot estimate the error bars")
    c = sum(d * v for d, v in spread) / sum(d for d, _ in spread)  # Var(one estimate at m rows) ≈ c / m
    u = np.array([1.0 / p["n_subset"] for p in pts])
    m = np.array([p["mean"] for p in pts])
    var = np.array([max(c / (p["n_subset"] * p["count"]), 1e-18) for p in pts])
    design = np.stack([np.ones_like(u), u], axis=1)
    w = 1.0 / var
    cov = np.linalg.pinv(design.T @ (design * w[:, None]))
    coef = cov @ (design.T @ (w * m))
    resid = m - design @ coef
    chi2 = float(np.sum(resid**2 * w))
    dof = len(pts) - 2
    # Two error sources. Every γ reuses the same N rows, so the subset means share a common-mode error:
    # that of one estimate on all N rows, c/N. On top, the extrapolation to 1/N → 0 amplifies the scatter
    # of the points about the line; its error is the fit's, scaled by the observed scatter (χ²/dof).
    common_var = c / n
    fit_var = cov[0, 0] * (chi2 / dof) if dof > 0 else cov[0, 0]
    sigma = np.sqrt(var)
    on_line = np.abs(resid) <= z_tolerance * sigma
    return {
        "intercept": float(coef[0]),
        "slope": float(coef[1]),
        "intercept_se": float(math.sqrt(max(common_var + fit_var, 0.0))),
        "common_se": float(math.sqrt(common_var)),
        "extrapolation_se": float(math.sqrt(max(fit_var, 0.0))),
        "chi2_dof": chi2 / dof if dof > 0 else float("nan"),
        "variance_constant": float(c),
        "points": [
            {**p, "se": float(s), "residual": float(r), "on_line": bool(o)}
            for p, s, r, o in zip(pts, sigma, resid, on_line, strict=True)
        ],
    }


@register_estimator
class Consistent(Estimator):
    """Wraps any estimator with the γ-subsampling protocol: extrapolated MI, 68% interval, consistency flag.

    Config: ``{estimator: consistent, inner: {estimator: ksg, k: 3}, max_gamma: 10}``.
    """

    name = "consistent"

    class Params(EstimatorParams):
        inner: dict[str, Any] = Field(description="The wrapped estimator's entry, e.g. {estimator: ksg, k: 3}.")
        max_gamma: int = Field(10, ge=2, description="Largest number of disjoint subsets γ.")
        min_subset_n: int = Field(20, ge=2, description="Smallest subset size N/γ used.")
        z_tolerance: float = Field(2.0, gt=0, description="Error bars within which a γ point is on the line.")
        min_on_line: float = Field(0.8, gt=0, le=1, description="Share of γ points on the line for `consistent`.")
        min_points: int = Field(4, ge=3, description="Fewest γ points for a fit.")

        @field_validator("inner", mode="before")
        @classmethod
        def _inner(cls, value: Any) -> Any:
            if isinstance(value, Estimator):  # built in Python: record it as the entry that rebuilds it
                value = {"estimator": value.name, **value.params}
            if not isinstance(value, Mapping) or "estimator" not in value:
                raise ValueError("needs a mapping with an `estimator` key, e.g. inner: {estimator: ksg, k: 3}")
            from mibench.estimators import resolve_entry

            return resolve_entry("inner", dict(value), prefix="inner").entry_dict()

    def __init__(self, inner: Mapping[str, Any] | Estimator, **params: Any) -> None:
        self._prebuilt = inner if isinstance(inner, Estimator) else None
        super().__init__(inner=inner, **params)

    @classmethod
    def min_n_for(cls, hp: Any) -> int:
        from mibench.estimators import resolve_entry

        return max(resolve_entry("inner", hp.inner, prefix="inner").min_n, hp.min_subset_n)

    def setup(self) -> None:
        from mibench.estimators import build_estimator

        hp = self.hp
        built = self._prebuilt or build_estimator("inner", hp.inner)
        self.inner = built
        self.max_gamma, self.min_subset_n, self.min_points = hp.max_gamma, hp.min_subset_n, hp.min_points
        self.z_tolerance, self.min_on_line = hp.z_tolerance, hp.min_on_line
        self.reject_constant_columns = built.reject_constant_columns  # type: ignore[misc]

    def estimate(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> Estimate:
        n = x.shape[0]
        gammas = self._gammas(n)
        samples, seeds, labels = _subsets(x, y, gammas, seed)
        results = self.inner.estimate_many(samples, seeds)
        points, failures = _gamma_points(results, labels, gammas, n)
        fit = fit_extrapolation(points, n, z_tolerance=self.z_tolerance)
        return self._extrapolated(fit, failures)

    def _gammas(self, n: int) -> list[int]:
        """The γ whose subsets have enough rows for the inner estimator; fewer than 3 cannot fit a line."""
        floor = max(self.min_subset_n, self.inner.min_n)
        gammas = [g for g in range(1, self.max_gamma + 1) if n // g >= floor]
        if len(gammas) < 3:
            raise ValueError(
                f"consistent: n={n} allows only γ ∈ {gammas} (subsets need >= {floor} rows); "
                "the extrapolation needs at least 3 subset sizes"
            )
        return gammas

    def _extrapolated(self, fit: dict[str, Any], failures: int) -> Estimate:
        """The fit as an Estimate: the intercept with a normal 68% interval, the consistency verdict in extras."""
        on = sum(p["on_line"] for p in fit["points"])
        fraction = on / len(fit["points"])
        consistent = len(fit["points"]) >= self.min_points and fraction >= self.min_on_line
        mi, se = fit["intercept"], fit["intercept_se"]
        from mibench.config.schema import DEFAULT_LEVELS
        from mibench.estimators.bootstrap import taus_for_levels

        taus = taus_for_levels((*DEFAULT_LEVELS, 0.68))
        quantiles = {t: mi + _normal_ppf(t) * se for t in taus}
        extras = {
            "consistent": bool(consistent),
            "extrapolated_mi": mi,
            "extrapolated_se": se,
            "slope": fit["slope"],
            "full_data_mi": next((p["mean"] for p in fit["points"] if p["gamma"] == 1), float("nan")),
            "fraction_on_line": fraction,
            "n_points": len(fit["points"]),
            "chi2_dof": fit["chi2_dof"],
            "subset_failures": failures,
            "inner": self.inner.name,
            "points": fit["points"],
        }
        return Estimate(
            value=mi, interval=(mi - Z68 * se, mi + Z68 * se), level=0.68, quantiles=quantiles, extras=extras
        )


def _subsets(
    x: np.ndarray, y: np.ndarray, gammas: list[int], seed: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[int], list[int]]:
    """All γ disjoint subsets of every γ, flat, with their seeds and γ labels, so the inner estimator can
    run them in one ``estimate_many`` (one stack for neural estimators)."""
    n = x.shape[0]
    samples, seeds, labels = [], [], []
    for g in gammas:
        perm = np.random.default_rng(_subseed(seed, g)).permutation(n)
        size = n // g
        for j in range(g):
            idx = perm[j * size : (j + 1) * size]
            samples.append((x[idx], y[idx]))
            seeds.append(_subseed(seed, g, j + 1))
            labels.append(g)
    return samples, seeds, labels


def _gamma_points(
    results: Sequence[Estimate | BaseException], labels: list[int], gammas: list[int], n: int
) -> tuple[list[dict[str, Any]], int]:
    """One point per γ (mean and sd of its finite subset estimates) and the count of failed subsets.

    A γ with fewer than half its subsets estimated is left out (its mean would be biased to the survivors);
    fewer than 3 points left is an error naming the first inner error, the likely cause.
    """
    points, failures = [], 0
    first_error: BaseException | None = None
    for g in gammas:
        vals = [r.value for r, lab in zip(results, labels, strict=True) if lab == g and isinstance(r, Estimate)]
        vals = [v for v in vals if math.isfinite(v)]
        failures += g - len(vals)
        if first_error is None:
            first_error = next(
                (r for r, lab in zip(results, labels, strict=True) if lab == g and isinstance(r, BaseException)),
                None,
            )
        if not vals or len(vals) < math.ceil(g / 2):
            continue
        points.append(
            {
                "gamma": g,
                "n_subset": n // g,
                "count": len(vals),
                "mean": float(np.mean(vals)),
                "sd": float(np.std(vals, ddof=1)) if len(vals) >= 2 else float("nan"),
            }
        )
    if len(points) < 3:
        raise ValueError(
            f"consistent: only {len(points)} γ point(s) had enough successful subset estimates "
            f"(first inner error: {first_error!r})"
        )
    return points, failures


# ----------------------------------------------------------------------------------------------------------
# Song & Ermon (2020) self-consistency checks

CHECKS = ("independence", "data_processing", "additivity")


def self_consistency_checks(
    estimator: Estimator,
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    abs_tol: float = 0.1,
    rel_tol: float = 0.1,
    copy_noise: float = 0.01,
) -> list[dict[str, Any]]:
    """Run the three checks on one sample; one row per check with the estimate, the target and a verdict.

    * independence: Î(X; Y[π]) for a random row permutation π must satisfy |Î| ≤ ``abs_tol``;
    * data processing: Î([X, X + σε]; Y) / Î(X; Y) must be 1 ± ``rel_tol`` (σ = ``copy_noise``·std(X); the
      noisy copy adds no information about Y, so equality is exact, and it avoids singular covariances);
    * additivity: with the (shuffled) sample cut into halves (X1, Y1), (X2, Y2) of n/2 rows,
      Î([X1, X2]; [Y1, Y2]) / Î(X1; Y1) must be 2·(1 ± ``rel_tol``) (both estimated from n/2 rows).

    When the reference Î is below ``abs_tol`` a ratio is meaningless, so the absolute difference to the
    target (I or 2I) is checked against ``abs_tol`` instead.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    rng = np.random.default_rng(_subseed(seed, 0x5E1F))
    n = x.shape[0]
    tol = {"abs_tol": abs_tol, "rel_tol": rel_tol}
    rows = []
    # independence
    v, sec, err = _timed(estimator, x, y[rng.permutation(n)], seed + 1)
    criterion = f"|I(X;Y_shuffled)| <= {abs_tol:g}"
    rows.append(_check_row(estimator, "independence", v, 0.0, 0.0, sec, err, criterion, **tol))
    # data processing
    ref, sec_ref, err_ref = _timed(estimator, x, y, seed + 2)
    v, sec, err = _timed(estimator, _with_noisy_copy(x, rng, copy_noise), y, seed + 2)
    criterion = f"I([X,X'];Y)/I(X;Y) = 1 ± {rel_tol:g}"
    rows.append(_check_row(estimator, "data_processing", v, ref, 1.0, sec + sec_ref, err or err_ref, criterion, **tol))
    # additivity
    half = n // 2
    perm = rng.permutation(n)
    a, b = perm[:half], perm[half : 2 * half]
    ref, sec_ref, err_ref = _timed(estimator, x[a], y[a], seed + 3)
    v, sec, err = _timed(estimator, np.concatenate([x[a], x[b]], 1), np.concatenate([y[a], y[b]], 1), seed + 3)
    criterion = f"I([X1,X2];[Y1,Y2])/I(X;Y) = 2 ± {2 * rel_tol:g}"
    rows.append(_check_row(estimator, "additivity", v, ref, 2.0, sec + sec_ref, err or err_ref, criterion, **tol))
    return rows


def _with_noisy_copy(x: np.ndarray, rng: np.random.Generator, copy_noise: float) -> np.ndarray:
    """[X, X + σε], σ = ``copy_noise``·std(X) per column (1 for a constant one): a redundant copy that adds no
    information about Y and, being noisy, no singular covariance."""
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    return np.concatenate([x, x + copy_noise * scale * rng.standard_normal(x.shape)], axis=1)


def _timed(estimator: Estimator, a: np.ndarray, b: np.ndarray, s: int) -> tuple[float | None, float, str | None]:
    """One estimate with its wall time; an estimator that raises is a finding (its error), not a crash."""
    t0 = time.perf_counter()
    try:
        return float(estimator(a, b, seed=s).value), time.perf_counter() - t0, None
    except Exception as exc:  # a failing estimator is a finding, reported in the row
        return None, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}"


def _check_row(
    estimator: Estimator,
    check: str,
    value: float | None,
    reference: float | None,
    expected_factor: float,
    seconds: float,
    error: str | None,
    tol_note: str,
    *,
    abs_tol: float,
    rel_tol: float,
) -> dict[str, Any]:
    """One check's row and verdict: a ratio to the reference, or, when the reference is within ``abs_tol``
    of 0 (a ratio would be meaningless), the absolute difference to the target."""
    out = {
        "check": check,
        "estimator": estimator.name,
        "value": value,
        "reference": reference,
        "expected": None,
        "statistic": None,
        "passed": False,
        "seconds": seconds,
        "error": error,
        "criterion": tol_note,
    }
    if value is None or reference is None:
        return out
    expected = expected_factor * reference
    out["expected"] = expected
    if check == "independence":
        out["statistic"] = value
        out["passed"] = bool(abs(value) <= abs_tol)
    elif abs(reference) > abs_tol:
        ratio = value / reference
        out["statistic"] = ratio
        out["passed"] = bool(abs(ratio - expected_factor) <= expected_factor * rel_tol)
    else:
        out["statistic"] = value - expected
        out["passed"] = bool(abs(value - expected) <= abs_tol)
    return out
