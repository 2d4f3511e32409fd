"""One device policy for every torch-backed estimator and the MIST trainer.

``auto`` means: ``$MIBENCH_DEVICE`` when set (the workflow sets it from the rule's ``gpu`` resource, so a CPU
job on a GPU node leaves the GPU to the jobs that asked for it), else CUDA when available, else the CPU.
An explicit CUDA request on a machine without one is an error, never a silent fallback.
"""

from __future__ import annotations

import os

from mibench.extras import available, require

#: Environment variable that picks the device when an estimator's ``device`` is ``auto``.
DEVICE_ENV = "MIBENCH_DEVICE"


def resolve_device(requested: str = "auto") -> str:
    """``auto`` → $MIBENCH_DEVICE if set, else ``cuda`` when available, else ``cpu``; explicit CUDA is checked.

    torch is imported only when the answer depends on it: without torch (no `learned` extra) ``auto`` is the CPU.
    """
    req = str(requested).strip().lower()
    source = "device hyperparameter"
    if req == "auto":
        env = os.environ.get(DEVICE_ENV, "").strip().lower()
        if env and env != "auto":
            req, source = env, f"${DEVICE_ENV}"
        elif not available("torch"):
            return "cpu"  # no torch, no CUDA; code that needs torch says so (the extra) when it imports it
        else:
            return "cuda" if require("torch", "device 'auto'").cuda.is_available() else "cpu"
    if req == "cpu":
        return "cpu"
    if req != "cuda" and not req.startswith("cuda:"):
        raise ValueError(f"{source}: device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {requested!r}")
    torch = require("torch", f"device {req!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"{source} asks for {req!r} but CUDA is not available (torch {torch.__version__})")
    if ":" in req and int(req.split(":", 1)[1]) >= torch.cuda.device_count():
        raise ValueError(f"{source} asks for {req!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    return req
