"""The factored encoder self-attention: per-head product twins as ordinary linear layers.

q_proj, k_proj, v_proj and out_proj keep their names (so peft can target them) but hold
sum(ranks) rows or columns instead of d_model: head h owns a block of qk_ranks[h] query/key
dimensions and vo_ranks[h] value/output dimensions. The math is the kernel op
`asr_app.kernels.twin_attention` (each head's block zero-padded to the largest rank, one
softmax attention with scale 1, the 1/sqrt(head_dim) folded into q_proj).

`LowRankLinear` replaces a feed-forward `nn.Linear` by `up(down(x))`, two ordinary linear
layers of inner size `rank` (the op `asr_app.kernels.low_rank_linear`).

While peft wraps the projections (LoRA adaptation), the layers call them as modules so the
adapters apply, and only the attention between them comes from the kernel.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

from asr_app.compression.adaptwin.factorize import factor_linear, factor_query_key, factor_value_output
from asr_app.compression.calibrate import TwinStatistics
from asr_app.kernels.low_rank_linear import low_rank_linear
from asr_app.kernels.twin_attention import twin_attention, twin_heads


@torch.no_grad()
def factor_heads(
    attn: Any,
    ranks: list[int],
    vo_ranks: list[int],
    cov_q: Tensor | None = None,
    cov_kv: Tensor | None = None,
    mode: str = "joint",
    stats: TwinStatistics | None = None,
    weighted_bias: bool = False,
) -> dict[str, Tensor]:
    """Product twins of every head of a Hugging Face `WhisperAttention` (or of a
    `TwinSelfAttention`, cut to lower ranks: progressive compression), head by head.

    Args:
        attn: the attention: a dense transformers `WhisperAttention` (heads of head_dim rows
            in q/k/v_proj) or a `TwinSelfAttention` (heads of their own ranks, scale folded).
        ranks, vo_ranks: query/key and value/output rank per head, 1..the head's width now.
        cov_q: (d_model, d_model) second moment of the queries' input, or None (plain).
        cov_kv: the same for the keys' and values' input (cross-attention's encoder output;
            pass cov_q for self-attention).
        mode: "joint" or "separate".
        stats: self-attention only, instead of cov_q/cov_kv: the layer's `TwinStatistics`
            (means for centring; each head's own value/output statistics).
        weighted_bias: fit the query bias weighted by the keys' statistics.
    Returns:
        {"q_proj.weight": (sum(ranks), d_model), "q_proj.bias": (sum(ranks),),
        "k_proj.weight": (sum(ranks), d_model), "v_proj.weight": (sum(vo_ranks), d_model),
        "out_proj.weight": (d_model, sum(vo_ranks)), "out_proj.bias": (d_model,)} with head
        h's block after heads 0..h-1's, the value bias folded into out_proj.bias.
    Raises:
        ValueError: as `factor_query_key` / `factor_value_output`.
    """
    q_rows, k_rows, qb, v_rows, o_cols = [], [], [], [], []
    out_bias = attn.out_proj.bias.detach().clone()
    v_bias = getattr(attn.v_proj, "bias", None)
    for i, ((rows, vo_rows), r, r_vo) in enumerate(zip(head_slices(attn), ranks, vo_ranks)):
        qk_cov, qk_mean = (cov_q, None) if stats is None else (stats.qk_cov, stats.qk_mean)
        q, k, b = factor_query_key(
            attn.q_proj.weight[rows],
            attn.q_proj.bias[rows],
            attn.k_proj.weight[rows],
            r,
            getattr(attn, "scaling", 1.0),
            qk_cov,
            mode,
            cov_k=cov_kv if stats is None else None,
            mean=qk_mean,
            weighted_bias=weighted_bias,
            key_mean=None if stats is None else stats.key_mean,
        )
        vo_cov, vo_mean = (cov_kv, None) if stats is None else (stats.vo_cov[i], stats.vo_mean[i])
        v, o, delta = factor_value_output(
            attn.v_proj.weight[vo_rows],
            None if v_bias is None else v_bias[vo_rows],
            attn.out_proj.weight[:, vo_rows],
            r_vo,
            vo_cov,
            mode,
            vo_mean,
        )
        assert b is not None  # q_proj has a bias (indexed above), so factor_query_key returns one
        q_rows.append(q)
        k_rows.append(k)
        qb.append(b)
        v_rows.append(v)
        o_cols.append(o)
        if delta is not None:
            out_bias += delta
    return {
        "q_proj.weight": torch.cat(q_rows),
        "q_proj.bias": torch.cat(qb),
        "k_proj.weight": torch.cat(k_rows),
        "v_proj.weight": torch.cat(v_rows),
        "out_proj.weight": torch.cat(o_cols, dim=1),
        "out_proj.bias": out_bias,
    }


def head_slices(attn: Any) -> list[tuple[slice, slice]]:
    """(query/key rows, value/output rows) of each head in q/k_proj and v_proj (out_proj's
    columns): head_dim-wide for a dense `WhisperAttention`, each head's ranks for a
    `TwinSelfAttention`."""
    if isinstance(attn, TwinSelfAttention):
        qk = [0, *itertools.accumulate(attn.ranks)]
        vo = [0, *itertools.accumulate(attn.vo_ranks)]
        return [(slice(qk[h], qk[h + 1]), slice(vo[h], vo[h + 1])) for h in range(attn.num_heads)]
    hd = attn.head_dim
    return [(slice(h * hd, (h + 1) * hd),) * 2 for h in range(attn.num_heads)]


@torch.no_grad()
def load_twins(attn: nn.Module, twins: dict[str, Tensor]) -> None:
    """Copy `factor_heads` output into a module with q/k/v/out_proj of matching shapes."""
    for key, value in twins.items():
        module, name = key.split(".")
        getattr(getattr(attn, module), name).copy_(value)


class TwinSelfAttention(nn.Module):
    """Encoder self-attention with rank-`qk_ranks[h]` query/key and rank-`vo_ranks[h]`
    value/output twins per head.

    Args:
        embed_dim: d_model.
        ranks: query/key rank per head, each >= 1.
        vo_ranks: value/output rank per head (default: `ranks`).
    Raises:
        ValueError: an empty or non-positive rank list, or lists of different lengths.
    Source: AdaPTwin (Biju et al., 2024); see README.md in this folder.
    """

    slots: Tensor  # buffers (register_buffer in __init__)
    vo_slots: Tensor

    def __init__(self, embed_dim: int, ranks: list[int], vo_ranks: list[int] | None = None):
        super().__init__()
        vo_ranks = list(ranks) if vo_ranks is None else list(vo_ranks)
        for name, rs in (("ranks", ranks), ("vo_ranks", vo_ranks)):
            if not rs or min(rs) < 1:
                raise ValueError(f"{name} must be a non-empty list of positive ints, got {rs}")
        if len(vo_ranks) != len(ranks):
            raise ValueError(f"ranks and vo_ranks need one entry per head, got {len(ranks)} and {len(vo_ranks)}")
        self.embed_dim = embed_dim
        self.ranks = list(ranks)
        self.vo_ranks = vo_ranks
        self.num_heads = len(ranks)
        self.max_rank = max(ranks)
        self.max_vo_rank = max(vo_ranks)
        self.q_proj = nn.Linear(embed_dim, sum(ranks), bias=True)
        self.k_proj = nn.Linear(embed_dim, sum(ranks), bias=False)
        self.v_proj = nn.Linear(embed_dim, sum(vo_ranks), bias=False)
        self.out_proj = nn.Linear(sum(vo_ranks), embed_dim, bias=True)
        slots = [h * self.max_rank + j for h, r in enumerate(ranks) for j in range(r)]
        vo_slots = [h * self.max_vo_rank + j for h, r in enumerate(vo_ranks) for j in range(r)]
        self.register_buffer("slots", torch.tensor(slots, dtype=torch.long), persistent=False)
        self.register_buffer("vo_slots", torch.tensor(vo_slots, dtype=torch.long), persistent=False)

    @classmethod
    def from_attention(
        cls,
        attn: Any,
        ranks: list[int],
        vo_ranks: list[int] | None = None,
        cov: torch.Tensor | None = None,
        mode: str = "joint",
        stats: TwinStatistics | None = None,
        weighted_bias: bool = False,
    ) -> TwinSelfAttention:
        """Factor a Hugging Face `WhisperAttention` (encoder self-attention) head by head,
        or cut a `TwinSelfAttention` to lower ranks (progressive compression).

        At ranks == [head_dim] * heads the result computes the same function to float32
        precision (tested).

        Args:
            attn: the dense attention (a transformers `WhisperAttention`), or a
                `TwinSelfAttention` to cut further; ranks / vo_ranks: per head, 1..the
                head's width now (head_dim for a dense one).
            cov: (d_model, d_model) second moment of the attention's input (data-aware) or None.
            mode: "joint" (product twins) or "separate" (Q and K truncated on their own).
            stats, weighted_bias: as `factor_heads` (stats replaces cov).
        Raises:
            ValueError: ranks of the wrong length or out of range.
        """
        h = attn.num_heads
        vo_ranks = list(ranks) if vo_ranks is None else list(vo_ranks)
        widths = [(s.stop - s.start, v.stop - v.start) for s, v in head_slices(attn)]
        if (
            len(ranks) != h
            or len(vo_ranks) != h
            or any(r > w for r, (w, _) in zip(ranks, widths))
            or any(r > w for r, (_, w) in zip(vo_ranks, widths))
        ):
            caps = [w for w, _ in widths], [w for _, w in widths]
            raise ValueError(f"need {h} ranks of at most {caps[0]} and {caps[1]}, got {ranks} and {vo_ranks}")
        new = cls(attn.embed_dim, ranks, vo_ranks)
        load_twins(new, factor_heads(attn, ranks, vo_ranks, cov, cov, mode, stats, weighted_bias))
        return new.to(attn.q_proj.weight.device)

    def head_probs(self, x: Tensor) -> Tensor:
        """Softmax weights of every head: (batch, T, d_model) -> (batch, heads, T, T)."""
        q, k = self.q_proj(x), self.k_proj(x)
        return torch.stack([torch.softmax(q[..., s] @ k[..., s].mT, dim=-1) for s, _ in head_slices(self)], dim=1)

    def forward(
        self,
        hidden_states: Tensor,
        key_value_states=None,
        past_key_values=None,
        attention_mask=None,
        output_attentions: bool = False,
        **kwargs,
    ) -> tuple[Tensor, None]:
        """hidden_states: (batch, audio_ctx, d_model) -> ((batch, audio_ctx, d_model), None).

        Raises:
            ValueError: cross-attention, a KV cache, output_attentions or an attention_mask
                (encoder self-attention over every position only).
        """
        if key_value_states is not None or past_key_values is not None or output_attentions:
            raise ValueError("TwinSelfAttention is encoder self-attention only (no cross-attention, cache or weights)")
        if attention_mask is not None:
            raise ValueError("TwinSelfAttention attends to every position: Whisper's encoder passes no attention_mask")
        x, projections = hidden_states, (self.q_proj, self.k_proj, self.v_proj, self.out_proj)
        if all(type(p) is nn.Linear for p in projections):
            out = twin_attention(
                x,
                self.q_proj.weight.mT,
                self.q_proj.bias,
                self.k_proj.weight.mT,
                self.v_proj.weight.mT,
                self.out_proj.weight.mT,
                self.out_proj.bias,
                ranks=self.ranks,
                vo_ranks=self.vo_ranks,
            )
        else:  # wrapped (peft LoRA): run the modules so their adapters apply
            out = self.out_proj(twin_heads(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.ranks, self.vo_ranks))
        return out, None


class LowRankLinear(nn.Module):
    """`up(down(x))`: a rank-`rank` stand-in for an `nn.Linear` (feed-forward fc1 / fc2).

    Args:
        in_features, out_features: as the dense layer; rank: inner size >= 1; bias: on `up`.
    Shapes: (..., in_features) -> (..., out_features).
    Raises:
        ValueError: rank < 1.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear | LowRankLinear, rank: int, cov: torch.Tensor | None = None
    ) -> LowRankLinear:
        """Truncated (optionally input-whitened) SVD of `linear` (see `factor_linear`); a
        `LowRankLinear` is cut to a lower rank from its product up @ down."""
        if isinstance(linear, LowRankLinear):
            weight, bias = (linear.up.weight @ linear.down.weight).detach(), linear.up.bias
        else:
            weight, bias = linear.weight.detach(), linear.bias
        new = cls(linear.in_features, linear.out_features, rank, bias=bias is not None)
        down, up = factor_linear(weight, rank, cov)
        with torch.no_grad():
            new.down.weight.copy_(down)
            new.up.weight.copy_(up)
            if bias is not None:
                new.up.bias.copy_(bias)
        return new.to(weight.device)

    def forward(self, x: Tensor) -> Tensor:
        if type(self.down) is nn.Linear and type(self.up) is nn.Linear:
            return low_rank_linear(x, self.down.weight.mT, self.up.weight.mT, self.up.bias)
        return self.up(self.down(x))  # wrapped (peft LoRA): run the modules so their adapters apply
