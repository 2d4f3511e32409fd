"""The MIST model: a set transformer over cells and rows, invariant to the symmetries of MI.

Input: a :class:`~mibench.learned.batching.Batch` (per-dataset normalised X and Y, padded, with masks; each
cell holds K channels: 1 for ``copula`` or ``robust``, 2 for ``copula+robust``).

1. **Cell stage** (width ``cell_dim``). Every cell (row i, column j) of X and of Y is one token, embedded
   from its normalised channels by a small MLP; no column index and no side label is ever embedded. Each of
   ``cell_layers`` blocks runs
   * *column attention within a row*: every cell attends to the cells of **its own side** and, through a
     separate set of outputs, to the cells of **the other side** (four masked SDPA calls XX, YY, XY, YX
     with shared weights), so the model knows "same side / other side" but never "X" or "Y";
   * *row attention within a column*: an induced set attention block (ISAB) over the n cells of the
     column, ``cell_inducing`` inducing points — cost linear in n.
2. **Row stage** (width ``dim``). Cells are averaged per side within each row, giving a_i (X side) and
   b_i (Y side); the row token is ``W₁(a_i + b_i) + W₂(a_i ⊙ b_i)`` (symmetric in the sides). ``layers``
   ISABs over rows (``inducing`` points), then pooling by multi-head attention (PMA) with ``seeds`` seeds.
3. **Heads** on a trunk MLP of the pooled seeds plus an embedding of (log n, log max(d), log min(d)):
   * point head: ``softplus`` ⇒ non-negative MI (trained with MSE: MIST);
   * quantile head: for each τ of the fixed grid, an increment ``softplus(g(z, e(τ)))`` with ``e(τ)`` a
     sinusoidal embedding of τ, plus a floor of 1e-4; quantiles are the cumulative sums, hence > 0 and
     strictly increasing in τ by construction, never crossing (trained with the pinball loss: MIST-QR).

Symmetries guaranteed exactly (up to float rounding; tested): permutation of rows; permutation of the
columns of X; permutation of the columns of Y; swapping X and Y. Padding (rows or columns) changes no output.

All attention goes through ``torch.nn.functional.scaled_dot_product_attention`` on 4-D tensors with
key-padding masks only, so PyTorch picks a fused kernel (no materialised attention weights on CUDA); on
CUDA the batch dimension is chunked below the kernels' 65535 grid limit (:func:`attend`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mibench.config.learned import Architecture
from mibench.learned.batching import STATS, Batch
from mibench.learned.calibration import QuantileCalibration
from mibench.learned.normalise import CHANNELS

#: floor of every quantile increment (nats): quantiles stay strictly increasing even where softplus underflows.
MIN_INCREMENT = 1e-4


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, D) -> (B, H, L, D/H)."""
    b, length, d = t.shape
    return t.view(b, length, heads, d // heads).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    """(B, H, L, Dh) -> (B, L, H·Dh)."""
    b, h, length, dh = t.shape
    return t.transpose(1, 2).reshape(b, length, h * dh)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Heads finish in float32 under bf16 autocast (float64 stays float64, for exactness tests)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


#: fused CUDA attention kernels put the batch in a grid dimension limited to 65535 (pytorch/pytorch#146704);
#: the column attention's batch is B·N (up to 128k rows), so it is cut into chunks below that.
MAX_ATTENTION_BATCH = 32768


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``scaled_dot_product_attention`` on (B, H, L, Dh), chunked along B on CUDA (kernel grid limits)."""
    sdpa = F.scaled_dot_product_attention
    if not q.is_cuda or q.shape[0] <= MAX_ATTENTION_BATCH:
        return sdpa(q, k, v, attn_mask=mask)
    chunks = []
    for start in range(0, q.shape[0], MAX_ATTENTION_BATCH):
        part = slice(start, start + MAX_ATTENTION_BATCH)
        sub_mask = None if mask is None else mask[part] if mask.shape[0] > 1 else mask
        chunks.append(sdpa(q[part], k[part], v[part], attn_mask=sub_mask))
    return torch.cat(chunks)


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, Lk) bool -> (B, 1, 1, Lk) for SDPA (True = attend); None when nothing is padded."""
    if mask is None or bool(mask.all()):
        return None
    return mask[:, None, None, :]


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.net(self.norm(h))


class MAB(nn.Module):
    """Multi-head attention block (pre-norm): queries attend to keys/values, then a feed-forward layer."""

    def __init__(self, dim: int, heads: int, ffn_mult: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        self.ffn = FeedForward(dim, ffn_mult)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        q = _heads(self.q(self.norm_q(queries)), self.heads)
        k, v = (_heads(t, self.heads) for t in self.kv(self.norm_kv(keys)).chunk(2, dim=-1))
        attended = attend(q, k, v, key_mask)
        return self.ffn(queries + self.out(_merge(attended)))


class ISAB(nn.Module):
    """Induced set attention block: m inducing points summarise the set, the set reads the summary back."""

    def __init__(self, dim: int, heads: int, inducing: int, ffn_mult: int) -> None:
        super().__init__()
        self.points = nn.Parameter(torch.randn(inducing, dim) / math.sqrt(dim))
        self.summarise = MAB(dim, heads, ffn_mult)
        self.read = MAB(dim, heads, ffn_mult)

    def forward(self, tokens: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        points = self.points.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        summary = self.summarise(points, tokens, key_mask)
        return self.read(tokens, summary, None)


class ColumnAttention(nn.Module):
    """Attention among the cells of one row: own side and other side, with weights shared by X and Y."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(2 * dim, dim)

    def forward(
        self, hx: torch.Tensor, hy: torch.Tensor, mx: torch.Tensor | None, my: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # hx: (R, Cx, D), hy: (R, Cy, D) with R = B·N rows; mx/my: (R, 1, 1, C) key masks or None
        qx, kx, vx = (_heads(t, self.heads) for t in self.qkv(self.norm(hx)).chunk(3, dim=-1))
        qy, ky, vy = (_heads(t, self.heads) for t in self.qkv(self.norm(hy)).chunk(3, dim=-1))
        ox = torch.cat([_merge(attend(qx, kx, vx, mx)), _merge(attend(qx, ky, vy, my))], dim=-1)
        oy = torch.cat([_merge(attend(qy, ky, vy, my)), _merge(attend(qy, kx, vx, mx))], dim=-1)
        return hx + self.out(ox), hy + self.out(oy)


class CellBlock(nn.Module):
    """One 2-D block: column attention within rows, then an ISAB along rows within every column."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.columns = ColumnAttention(arch.cell_dim, arch.cell_heads)
        self.rows = ISAB(arch.cell_dim, arch.cell_heads, arch.cell_inducing, arch.ffn_mult)

    def forward(self, cells: torch.Tensor, cx: int, masks: dict[str, torch.Tensor | None]) -> torch.Tensor:
        b, n, c, d = cells.shape  # (B, N, Cx+Cy, D), X columns first
        flat = cells.reshape(b * n, c, d)
        hx, hy = self.columns(flat[:, :cx], flat[:, cx:], masks["col_x"], masks["col_y"])
        cells = torch.cat([hx, hy], dim=1).view(b, n, c, d)
        by_column = cells.transpose(1, 2).reshape(b * c, n, d)
        by_column = self.rows(by_column, masks["row"])
        return by_column.view(b, c, n, d).transpose(1, 2)


class MISTModel(nn.Module):
    """Point and quantile estimates of I(X; Y) for a batch of datasets (see the module docstring)."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        #: offsets for the quantiles, fitted after training on held-out datasets (:mod:`.calibration`);
        #: applied by :func:`~mibench.learned.infer.predict`, never inside :meth:`forward` (training sees raw ones)
        self.calibration: QuantileCalibration | None = None
        dc, d = arch.cell_dim, arch.dim
        self.embed = nn.Sequential(nn.Linear(len(CHANNELS[arch.normalisation]), dc), nn.GELU(), nn.Linear(dc, dc))
        self.cell_blocks = nn.ModuleList(CellBlock(arch) for _ in range(arch.cell_layers))
        self.cell_norm = nn.LayerNorm(dc)
        self.row_sum = nn.Linear(dc, d)
        self.row_prod = nn.Linear(dc, d, bias=False)
        self.row_blocks = nn.ModuleList(ISAB(d, arch.heads, arch.inducing, arch.ffn_mult) for _ in range(arch.layers))
        self.seeds = nn.Parameter(torch.randn(arch.seeds, d) / math.sqrt(d))
        self.pool = MAB(d, arch.heads, arch.ffn_mult)
        self.meta = nn.Sequential(nn.Linear(3 + (STATS if arch.dependence_stats else 0), d), nn.GELU(), nn.Linear(d, d))
        hidden = arch.head_hidden
        self.trunk = nn.Sequential(
            nn.LayerNorm(arch.seeds * d + d),
            nn.Linear(arch.seeds * d + d, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
        )
        self.point = nn.Linear(hidden, 1)
        freqs = torch.arange(1, arch.tau_dim // 2 + 1, dtype=torch.float32) * math.pi
        self.register_buffer("tau_freqs", freqs, persistent=False)
        self.register_buffer("taus", torch.tensor(arch.taus, dtype=torch.float32), persistent=False)
        self.tau_embed = nn.Linear(2 * freqs.numel() + 1, arch.tau_dim)
        self.quantile = nn.Sequential(nn.Linear(hidden + arch.tau_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def tau_features(self) -> torch.Tensor:
        """Embedding e(τ) of every τ of the grid: τ, sin(kπτ), cos(kπτ) -> linear (never τ as a raw input)."""
        angles = self.taus[:, None] * self.tau_freqs[None, :]
        return self.tau_embed(torch.cat([self.taus[:, None], angles.sin(), angles.cos()], dim=-1))

    def features(self, batch: Batch) -> torch.Tensor:
        """The trunk's representation z (B, head_hidden) of every dataset of the batch."""
        b, n, cx = batch.x.shape[:3]
        rows = batch.rows
        row_mask = rows[:, None, :].expand(b, cx + batch.y.shape[2], n).reshape(-1, n)
        masks = {
            "row": _key_mask(row_mask),
            "col_x": _key_mask(batch.xcols[:, None, :].expand(b, n, cx).reshape(b * n, cx)),
            "col_y": _key_mask(batch.ycols[:, None, :].expand(b, n, batch.y.shape[2]).reshape(b * n, -1)),
        }
        values = torch.cat([batch.x, batch.y], dim=2)  # (B, N, C, K)
        cells = self.embed(values)
        for block in self.cell_blocks:
            cells = block(cells, cx, masks)
        cells = self.cell_norm(cells)
        # per-side means over real columns within each row
        wx = batch.xcols.to(cells.dtype)
        wy = batch.ycols.to(cells.dtype)
        a = torch.einsum("bncd,bc->bnd", cells[:, :, :cx], wx) / wx.sum(1)[:, None, None]
        c = torch.einsum("bncd,bc->bnd", cells[:, :, cx:], wy) / wy.sum(1)[:, None, None]
        tokens = self.row_sum(a + c) + self.row_prod(a * c)
        row_keys = _key_mask(rows)
        for block in self.row_blocks:
            tokens = block(tokens, row_keys)
        pooled = self.pool(self.seeds.unsqueeze(0).expand(b, -1, -1), tokens, row_keys).reshape(b, -1)
        dx, dy = batch.xcols.sum(1).float(), batch.ycols.sum(1).float()
        meta = torch.stack([batch.n.log(), torch.maximum(dx, dy).log(), torch.minimum(dx, dy).log()], dim=-1)
        if self.arch.dependence_stats:
            meta = torch.cat([meta, batch.stats.to(meta.dtype)], dim=-1)
        return self.trunk(torch.cat([pooled, self.meta(meta.to(pooled.dtype))], dim=-1))

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(point (B,), quantiles (B, len(taus))) in nats, ≥ float32; quantiles increase along τ."""
        z = self.features(batch)
        point = F.softplus(_wide(self.point(z)).squeeze(-1))
        emb = self.tau_features().to(z.dtype)
        joint = torch.cat([z[:, None, :].expand(-1, emb.shape[0], -1), emb[None].expand(z.shape[0], -1, -1)], -1)
        increments = F.softplus(_wide(self.quantile(joint)).squeeze(-1)) + MIN_INCREMENT
        return point, increments.cumsum(dim=-1)
