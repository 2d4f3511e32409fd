"""Learned MI estimators (MIST, MIST-QR): model, training, checkpoints.

Submodules that need torch (``model``, ``train``, ``checkpoint``, ``infer``) are imported explicitly;
``mibench.learn.config`` stays torch-free for the Snakefile.
"""

from mibench.learn.config import DEFAULT_TAUS, PRESETS, Architecture, ModelSpec, model_spec, model_specs

__all__ = ["DEFAULT_TAUS", "PRESETS", "Architecture", "ModelSpec", "model_spec", "model_specs"]
