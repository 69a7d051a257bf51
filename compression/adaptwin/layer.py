"""The factored encoder self-attention: per-head product twins as ordinary linear layers.

q_proj, k_proj, v_proj and out_proj keep their names (so peft can target them) but hold
sum(ranks) rows or columns instead of d_model: head h owns a block of ranks[h]. At run time
each head's block is placed in a zero-padded (heads, max_rank) layout and one
scaled-dot-product attention call runs with scale 1 (the 1/sqrt(head_dim) is folded into
q_proj). Padded dimensions are zero in queries, keys and values, so they change nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_app.compression.adaptwin.factorize import factor_query_key, factor_value_output


class TwinSelfAttention(nn.Module):
    """Encoder self-attention with rank-`ranks[h]` query/key and value/output twins per head.

    Args:
        embed_dim: d_model.
        ranks: one rank per head, each >= 1.
    Raises:
        ValueError: an empty or non-positive rank list.
    Source: AdaPTwin (Biju et al., 2024); see README.md in this folder.
    """

    def __init__(self, embed_dim: int, ranks: list[int]):
        super().__init__()
        if not ranks or min(ranks) < 1:
            raise ValueError(f"ranks must be a non-empty list of positive ints, got {ranks}")
        self.embed_dim = embed_dim
        self.ranks = list(ranks)
        self.num_heads = len(ranks)
        self.max_rank = max(ranks)
        total = sum(ranks)
        self.q_proj = nn.Linear(embed_dim, total, bias=True)
        self.k_proj = nn.Linear(embed_dim, total, bias=False)
        self.v_proj = nn.Linear(embed_dim, total, bias=False)
        self.out_proj = nn.Linear(total, embed_dim, bias=True)
        slots = [h * self.max_rank + j for h, r in enumerate(ranks) for j in range(r)]
        self.register_buffer("slots", torch.tensor(slots, dtype=torch.long), persistent=False)

    @classmethod
    def from_attention(cls, attn: nn.Module, ranks: list[int]) -> "TwinSelfAttention":
        """Factor a Hugging Face `WhisperAttention` (encoder self-attention) head by head.

        At ranks == [head_dim] * heads the result computes the same function to float32
        precision (tested).
        """
        h, hd = attn.num_heads, attn.head_dim
        if len(ranks) != h or max(ranks) > hd:
            raise ValueError(f"need {h} ranks of at most {hd}, got {ranks}")
        new = cls(attn.embed_dim, ranks)
        q_rows, k_rows, qb, v_rows, o_cols = [], [], [], [], []
        out_bias = attn.out_proj.bias.detach().clone()
        with torch.no_grad():
            for i, r in enumerate(ranks):
                rows = slice(i * hd, (i + 1) * hd)
                q, k, b = factor_query_key(attn.q_proj.weight[rows], attn.q_proj.bias[rows], attn.k_proj.weight[rows],
                                           r, attn.scaling)
                v, o, delta = factor_value_output(attn.v_proj.weight[rows], attn.v_proj.bias[rows],
                                                  attn.out_proj.weight[:, rows], r)
                q_rows.append(q)
                k_rows.append(k)
                qb.append(b)
                v_rows.append(v)
                o_cols.append(o)
                out_bias += delta
            new.q_proj.weight.copy_(torch.cat(q_rows))
            new.q_proj.bias.copy_(torch.cat(qb))
            new.k_proj.weight.copy_(torch.cat(k_rows))
            new.v_proj.weight.copy_(torch.cat(v_rows))
            new.out_proj.weight.copy_(torch.cat(o_cols, dim=1))
            new.out_proj.bias.copy_(out_bias)
        return new.to(attn.q_proj.weight.device)

    def _heads(self, x: Tensor) -> Tensor:
        """(batch, T, sum(ranks)) -> (batch, heads, T, max_rank), zero-padded."""
        b, t, _ = x.shape
        full = x.new_zeros(b, t, self.num_heads * self.max_rank)
        full.index_copy_(2, self.slots, x)
        return full.view(b, t, self.num_heads, self.max_rank).transpose(1, 2)

    def forward(self, hidden_states: Tensor, key_value_states=None, past_key_values=None, attention_mask=None,
                output_attentions: bool = False, **kwargs) -> tuple[Tensor, None]:
        """hidden_states: (batch, audio_ctx, d_model) -> ((batch, audio_ctx, d_model), None).

        Raises:
            ValueError: cross-attention, a KV cache or output_attentions (encoder only).
        """
        if key_value_states is not None or past_key_values is not None or output_attentions:
            raise ValueError("TwinSelfAttention is encoder self-attention only (no cross-attention, cache or weights)")
        q = self._heads(self.q_proj(hidden_states))
        k = self._heads(self.k_proj(hidden_states))
        v = self._heads(self.v_proj(hidden_states))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=1.0)
        b, _, t, _ = out.shape
        out = out.transpose(1, 2).reshape(b, t, -1).index_select(2, self.slots)
        return self.out_proj(out), None
