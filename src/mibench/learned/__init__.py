"""Learned MI estimators (MIST, MIST-QR): model, training, checkpoints.

Submodules need torch (``model``, ``train``, ``checkpoint``, ``infer``) and are imported explicitly; the
model entries of the config (presets, training, data) are torch-free in :mod:`mibench.config.learned`.
"""

from mibench.config.learned import DEFAULT_TAUS, PRESETS, Architecture, ModelSpec, model_spec

__all__ = ["DEFAULT_TAUS", "PRESETS", "Architecture", "ModelSpec", "model_spec"]
