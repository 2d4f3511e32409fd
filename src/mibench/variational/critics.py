"""Critics as *stacks*: the weights of C independent critics live in one tensor with a leading cell axis.

Why stacks: a benchmark trains thousands of small critics (one per cell). Training them one by one leaves a
GPU idle between tiny kernels; stacking their weights and using batched matmuls (``torch.baddbmm``) trains C
critics with the kernel count of one. A single estimate is the special case C = 1, so the per-cell and the
many-cell paths run the same code and give the same numbers.

Every critic maps a batch of B pairs to the B×B matrix of scores ``S[c, i, j] = T_c(x_i, y_j)``: the diagonal
holds joint pairs, the off-diagonal entries pairs from the product of marginals (Poole et al. 2019 use all
B² pairs for every bound).

* ``concat``    — an MLP on the concatenation [x, y] (BMI's default critic). The first layer splits into
  ``x W_x + y W_y + b``, so the B² pair activations are a broadcast sum of two B-row products: the pairs cost
  nothing in the input dimension.
* ``separable`` — ``g(x)ᵀ h(y)`` with two MLPs g, h ending in an ``embed_dim`` embedding; the score matrix
  is one batched matmul (Poole et al. 2019's separable critic).

Initialisation draws every tensor of cell c from cell c's own ``torch.Generator`` in a fixed order, as
U(−1/√fan_in, 1/√fan_in) (PyTorch's ``nn.Linear`` range), so a cell's critic does not depend on which
other cells share its stack.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

ACTIVATIONS = {
    "relu": torch.relu,
    "elu": torch.nn.functional.elu,
    "gelu": torch.nn.functional.gelu,
    "tanh": torch.tanh,
    "leaky_relu": torch.nn.functional.leaky_relu,
    "softplus": torch.nn.functional.softplus,
}
CRITICS = ("concat", "separable")


@dataclass(frozen=True)
class CriticSpec:
    """Architecture of a critic: kind, hidden widths, embedding size (separable), activation."""

    kind: str = "concat"
    hidden: tuple[int, ...] = (16, 8)
    embed_dim: int = 32
    activation: str = "relu"

    def __post_init__(self) -> None:
        if self.kind not in CRITICS:
            raise ValueError(f"critic must be one of {', '.join(CRITICS)}, got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {list(self.hidden)}")
        if self.kind == "concat" and not self.hidden:
            raise ValueError("the concat critic needs at least one hidden layer (hidden: [16, 8])")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")

    def shapes(self, dim_x: int, dim_y: int) -> list[tuple[str, tuple[int, int]]]:
        """(name, (fan_in, fan_out)) of every weight, in initialisation order; biases follow their weight."""
        if self.kind == "concat":
            h = list(self.hidden)
            out = [("x0", (dim_x, h[0])), ("y0", (dim_y, h[0]))]
            widths = [*h, 1]
            out += [(f"l{i}", (widths[i - 1], widths[i])) for i in range(1, len(widths))]
            return out
        out = []
        for side, dim in (("g", dim_x), ("h", dim_y)):
            widths = [dim, *self.hidden, self.embed_dim]
            out += [(f"{side}{i}", (widths[i], widths[i + 1])) for i in range(len(widths) - 1)]
        return out


def init_params(
    spec: CriticSpec,
    dim_x: int,
    dim_y: int,
    generators: Sequence[torch.Generator],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Stacked parameters for ``len(generators)`` critics: weights (C, fan_in, fan_out), biases (C, 1, fan_out).

    Values are drawn on the CPU from each cell's generator (so they do not depend on the device), then moved.
    """
    per_cell: list[dict[str, torch.Tensor]] = []
    shapes = spec.shapes(dim_x, dim_y)
    for gen in generators:
        cell: dict[str, torch.Tensor] = {}
        for name, (fan_in, fan_out) in shapes:
            # the concat critic's first layer has fan-in dim_x + dim_y, split over two weight blocks
            fan = dim_x + dim_y if name in ("x0", "y0") else fan_in
            bound = 1.0 / math.sqrt(fan)
            cell[f"{name}.w"] = (torch.rand(fan_in, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            if name != "y0":  # the first concat layer has one bias, stored with x0
                cell[f"{name}.b"] = (torch.rand(1, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        per_cell.append(cell)
    return {
        key: torch.stack([cell[key] for cell in per_cell]).to(device=device, dtype=dtype).requires_grad_(True)
        for key in per_cell[0]
    }


def _mlp(params: dict[str, torch.Tensor], names: Sequence[str], h: torch.Tensor, act) -> torch.Tensor:
    """Stacked MLP over the named layers: activation between layers, none after the last."""
    for i, name in enumerate(names):
        h = torch.baddbmm(params[f"{name}.b"], h, params[f"{name}.w"])
        if i < len(names) - 1:
            h = act(h)
    return h


def scores(spec: CriticSpec, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Score matrices S (C, B, B) with S[c, i, j] = T_c(x[c, i], y[c, j]); x (C, B, dx), y (C, B, dy)."""
    act = ACTIVATIONS[spec.activation]
    c, b = x.shape[0], x.shape[1]
    if spec.kind == "separable":
        layers = range(len(spec.hidden) + 1)
        gx = _mlp(params, [f"g{i}" for i in layers], x, act)
        hy = _mlp(params, [f"h{i}" for i in layers], y, act)
        return torch.bmm(gx, hy.transpose(1, 2))
    hx = torch.baddbmm(params["x0.b"], x, params["x0.w"])  # (C, B, H)
    hy = torch.bmm(y, params["y0.w"])  # (C, B, H)
    h = act(hx[:, :, None, :] + hy[:, None, :, :]).reshape(c, b * b, -1)
    h = _mlp(params, [f"l{i}" for i in range(1, len(spec.hidden) + 1)], h, act)  # hidden[1:], then the output
    return h.reshape(c, b, b)
