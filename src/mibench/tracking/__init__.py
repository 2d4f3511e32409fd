"""MLflow logging, all in one package. MLflow is the run ledger; Parquet stays the source of truth.

* Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<results>/mlflow.db``; artifacts of the
  local store live in ``<results>/mlartifacts``.
* One experiment per benchmark (``mibench/<benchmark>``), one run per (benchmark, estimator, identity):
  the identity (tag ``mibench.run_key``) hashes the benchmark's plan, the estimator's resolved
  hyperparameters, the cells the ranking compares on, and the estimator's estimates minus ``seconds``.
  Logging again, or re-estimating identical results, finds the run instead of adding one; changed results
  or settings add a run.
* Params: every resolved hyperparameter (defaults too, :func:`resolved_hyperparameters`) and the grid.
* Metrics: the fair comparison of :func:`mibench.evaluate.rank_estimators` (``rank`` within its group,
  ``scored`` of ``cells``, ``common_cells``) and, on the common cells, ``mse``, ``bias``, ``mae``, ``mre``,
  coverage and per-family/per-bin MSE, each per-group value with its cell count next to it
  (``mse.family.student`` and ``mse.family.student.n_cells``); ``own.*`` are over the estimator's own
  scored cells (not comparable between estimators with failures). Tag ``mibench.group`` says
  ``complete`` / ``with failures`` / ``no estimates``.
* Artifacts: ``metrics/<benchmark>.parquet``, ``calibration/<benchmark>.parquet``, ``figures/*.png``.
* Training runs (:class:`~mibench.tracking.training.RunLogger`): experiment ``mibench/train``, one run per training (a resumed training
  continues its run), the model spec as params, per-step losses buffered and sent with ``log_batch`` every
  few seconds (one call per value costs ~65 ms), validation metrics, the checkpoint as artifacts.
  Tracking is a ledger, never a dependency: every failure warns and stops tracking, the checkpoint is
  always written first.
* A tracking failure never loses results: callers get :class:`TrackingError`, the Parquet files are
  already complete, and ``mibench log`` / a Snakemake re-run logs them later. HTTP retries are capped so an
  unreachable server fails fast instead of retrying for minutes.

Modules: :mod:`~mibench.tracking.store` (the URI, the client, experiments, ``flatten``; low, so anything may use
it), :mod:`~mibench.tracking.training` (:class:`RunLogger`, used by the learned trainer) and
:mod:`~mibench.evaluate.mlflow_runs` (a benchmark's runs: ``log_benchmark``, ``log_from_disk``; it reads the
plans and metrics, so it sits above them). This face re-exports only the low part.
"""

from mibench.tracking.store import TrackingError, flatten, tracking_uri

__all__ = ["TrackingError", "flatten", "tracking_uri"]
