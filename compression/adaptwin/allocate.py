"""Rank allocation under one parameter budget (AdaPTwin's "adaptive" ranks; greedy is ours).

Every factorable part of the encoder is a component: the query/key twin and the
value/output twin of each head, and fc1 and fc2 of each layer. Keeping rank r of a
component costs r * (params per rank) and leaves the expected squared error
    gain[site] * weight * sum_{i > r} s_i^2
at the encoder output, where s are the component's (whitened) singular values
(`factorize.py`), gain comes from `calibrate.measure_sensitivity` and weight is the
number of elements per position the error spreads over (audio_ctx keys for a query/key
twin, 1 otherwise). Squared singular values are sorted, so each extra rank buys less
than the one before: adding one rank at a time to the component with the largest error
reduction per parameter is optimal for this separable objective (a greedy knapsack on
concave gains). A feed-forward layer whose rank reaches the break-even point with its
dense weight is kept dense.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace

import torch
from torch import nn

from asr_app.compression.adaptwin.config import CompressionPlan, LayerPlan
from asr_app.compression.adaptwin.factorize import centred, linear_singular_values, whitened_product_singular_values
from asr_app.compression.adaptwin.layer import LowRankLinear, head_slices
from asr_app.compression.adaptwin.prune import ffn_keep_for_budget
from asr_app.compression.surgery import encoder_of


@dataclass
class _Component:
    layer: int
    kind: str  # "qk", "vo", "fc1", "fc2"
    head: int | None
    energy: torch.Tensor  # weighted squared singular values, descending
    cost_per_rank: int
    max_rank: int
    rank: int = 1
    factored: bool = False  # already low rank (a progressive cut): never "dense" in the plan
    dense_cost: int = 0  # a feed-forward layer's dense weight (in * out), what its last step reaches


def _components(
    model: nn.Module, stats, gains, attention: bool, ffn: bool, min_rank: int, centre: bool, head_stats: bool
) -> list[_Component]:
    encoder = encoder_of(model)
    out = []
    for i, layer in enumerate(encoder.layers):
        g = gains[i] if gains is not None else {"qk": 1.0, "attn_out": 1.0, "fc1_out": 1.0, "fc2_out": 1.0}
        if attention:
            a = layer.self_attn
            d, scale = a.embed_dim, getattr(a, "scaling", 1.0)  # a TwinSelfAttention has its scale folded
            cov = stats.attn_in[i] if stats is not None else None
            eye = torch.eye(d, dtype=torch.float64) if cov is not None else None
            twin = stats.twin_statistics(i, centre, head_stats, a.num_heads) if stats is not None else None
            cov_k = cov if twin is None else centred(twin.qk_cov, twin.qk_mean)  # keys: as factored
            # a whitened query/key error is per (query, key) pair: it spreads over audio_ctx keys
            audio_ctx = encoder.config.max_source_positions if gains is not None else 1
            for h, (rows, vo_rows) in enumerate(head_slices(a)):
                s_qk = whitened_product_singular_values(
                    scale * a.q_proj.weight[rows].T.detach(), a.k_proj.weight[rows].T.detach(), cov, cov_k
                )
                vo_cov = None if twin is None else centred(twin.vo_cov[h], twin.vo_mean[h])
                s_vo = whitened_product_singular_values(
                    a.v_proj.weight[vo_rows].T.detach(), a.out_proj.weight[:, vo_rows].detach(), vo_cov, eye
                )
                qk_gain = g["qk"][h] if isinstance(g["qk"], list) else g["qk"]  # per head (Fisher) or per layer
                width, vo_width = rows.stop - rows.start, vo_rows.stop - vo_rows.start
                out.append(_Component(i, "qk", h, qk_gain * audio_ctx * s_qk**2, 2 * d + 1, width, min_rank))
                out.append(_Component(i, "vo", h, g["attn_out"] * s_vo**2, 2 * d, vo_width, min_rank))
        if ffn:
            for name in ("fc1", "fc2"):
                lin = getattr(layer, name)
                cov = getattr(stats, f"{name}_in")[i] if stats is not None else None
                factored = isinstance(lin, LowRankLinear)
                weight = (lin.up.weight @ lin.down.weight) if factored else lin.weight
                s = linear_singular_values(weight.detach(), cov)
                per_rank = lin.in_features + lin.out_features
                max_rank = lin.rank if factored else (lin.in_features * lin.out_features) // per_rank  # break-even
                energy = g[f"{name}_out"] * s**2
                out.append(
                    _Component(
                        i,
                        name,
                        None,
                        energy,
                        per_rank,
                        max_rank,
                        min_rank,
                        factored=factored,
                        dense_cost=lin.in_features * lin.out_features,
                    )
                )
    return out


def dense_params(model: nn.Module) -> int:
    """Parameters of the (dense) encoder."""
    return sum(p.numel() for p in encoder_of(model).parameters())


def plan_encoder_params(model: nn.Module, plan: CompressionPlan) -> int:
    """Encoder parameters after `compress_encoder(model, plan)`, computed from the shapes."""
    encoder = encoder_of(model)
    total = dense_params(model)
    for i, lp in plan.layers.items():
        layer = encoder.layers[i]
        if lp.qk is not None:
            assert lp.vo is not None  # LayerPlan: vo is None exactly when qk is
            a = layer.self_attn
            d = a.embed_dim
            dense = sum(p.numel() for p in a.parameters())
            total += sum(lp.qk) * (2 * d + 1) + sum(lp.vo) * 2 * d + d - dense
        if lp.ffn_keep is not None:
            d, f = layer.fc1.in_features, layer.fc1.out_features
            total += (2 * d + 1) * (lp.ffn_keep - f)
        for name, rank in (("fc1", lp.fc1), ("fc2", lp.fc2)):
            if rank is not None:
                lin = getattr(layer, name)
                total += rank * (lin.in_features + lin.out_features) - lin.in_features * lin.out_features
    return total


def pruned_plan(model: nn.Module, plan: CompressionPlan) -> CompressionPlan:
    """The same plan with each factored feed-forward block pruned to hidden neurons instead
    (`prune.py`), spending what its low-rank fc1/fc2 ranks spend (never more).

    The attention ranks are unchanged; a block with both fc1 and fc2 dense stays dense.
    Source: ours (the per-layer budget comes from the rank allocation above).
    """
    encoder = encoder_of(model)
    layers = {}
    for i, lp in plan.layers.items():
        if lp.fc1 is None and lp.fc2 is None:
            layers[i] = lp
            continue
        fc1 = encoder.layers[i].fc1
        d, f = fc1.in_features, fc1.out_features
        weights = f + sum(d * f if r is None else r * (d + f) for r in (lp.fc1, lp.fc2))
        layers[i] = replace(lp, fc1=None, fc2=None, ffn_keep=ffn_keep_for_budget(d, f, weights))
    return replace(plan, layers=layers)


def allocate_ranks(
    model: nn.Module,
    target_ratio: float,
    stats=None,
    gains=None,
    attention: bool = True,
    ffn: bool = True,
    min_rank: int = 1,
    centre: bool = False,
    head_stats: bool = False,
    dense: nn.Module | None = None,
) -> CompressionPlan:
    """Ranks per layer and head that keep at most `target_ratio` of the encoder's parameters.

    Args:
        model: Whisper model with a dense encoder, or (a progressive cut) one compressed
            already: its factored parts can only keep or lower their ranks, and the plan
            gives every factored part a rank (none goes back to dense).
        target_ratio: encoder parameters kept / dense encoder parameters, in (0, 1].
        stats: `ActivationStats` (data-aware singular values) or None (plain).
        gains: `calibrate.measure_sensitivity` or `fisher.fisher_sensitivity` output (its
            "qk" one gain per head) or None (all sites weigh the same).
        attention, ffn: which parts may be factored.
        min_rank: smallest rank any factored component keeps.
        centre, head_stats: weigh the twins' singular values by the statistics they will be
            factored with (`ActivationStats.twin_statistics`); recorded in the plan.
        dense: the original model, when `model` is compressed already (parameters are
            counted against its encoder); default `model`.
    Returns:
        CompressionPlan (data_aware = stats is not None, mode "joint").
    Raises:
        ValueError: a ratio out of range, or one too small to reach even at `min_rank`.
    Source: greedy marginal-gain allocation (ours) over AdaPTwin's product twins.
    """
    if not 0 < target_ratio <= 1:
        raise ValueError(f"target_ratio must be in (0, 1], got {target_ratio}")
    comps = _components(model, stats, gains, attention, ffn, min_rank, centre, head_stats)
    layers = len(encoder_of(model).layers)
    dense = model if dense is None else dense
    budget = target_ratio * dense_params(dense)

    def plan_of() -> CompressionPlan:
        lps = {}
        for i in range(layers):
            mine = [c for c in comps if c.layer == i]
            qk = [c.rank for c in mine if c.kind == "qk"] or None
            vo = [c.rank for c in mine if c.kind == "vo"] or None
            ffn_rank = {
                c.kind: (None if c.rank >= c.max_rank and not c.factored else c.rank)
                for c in mine
                if c.kind in ("fc1", "fc2")
            }
            lps[i] = LayerPlan(qk, vo, ffn_rank.get("fc1"), ffn_rank.get("fc2"))
        aware = stats is not None
        return CompressionPlan(lps, data_aware=aware, centre=centre and aware, head_stats=head_stats and aware)

    used = plan_encoder_params(dense, plan_of())
    if used > budget:
        raise ValueError(
            f"target_ratio {target_ratio} is below what rank {min_rank} everywhere keeps "
            f"({used / dense_params(dense):.3f})"
        )
    heap = [(-float(c.energy[c.rank]) / c.cost_per_rank, n) for n, c in enumerate(comps) if c.rank < c.max_rank]
    heapq.heapify(heap)
    while heap:
        _, n = heapq.heappop(heap)
        c = comps[n]
        step = c.cost_per_rank
        if c.kind in ("fc1", "fc2") and c.rank + 1 >= c.max_rank and not c.factored:
            step = max(c.dense_cost - c.rank * c.cost_per_rank, 0)  # the rest of the way to dense
        if used + step > budget:
            continue  # this component cannot grow; others (cheaper per step) still may
        c.rank += 1
        used += step
        if c.rank < c.max_rank:
            heapq.heappush(heap, (-float(c.energy[c.rank]) / c.cost_per_rank, n))
    return plan_of()


def uniform_plan(
    model: nn.Module, target_ratio: float, attention: bool = True, ffn: bool = True, mode: str = "joint"
) -> CompressionPlan:
    """One attention rank and one feed-forward rank for every layer, cut by the same share
    of their maximum, the largest share that fits `target_ratio` (plain-SVD baseline)."""
    encoder = encoder_of(model)
    a, lin = encoder.layers[0].self_attn, encoder.layers[0].fc1
    ffn_max = (lin.in_features * lin.out_features) // (lin.in_features + lin.out_features)
    budget = target_ratio * dense_params(model)
    best = None
    for step in range(1, 1001):
        share = step / 1000
        r = max(1, round(share * a.head_dim)) if attention else None
        k = max(1, round(share * ffn_max)) if ffn else None
        plan = CompressionPlan.uniform(len(encoder.layers), a.num_heads, r, k, data_aware=False, mode=mode)
        if plan_encoder_params(model, plan) > budget:
            break
        best = plan
    if best is None:
        raise ValueError(f"target_ratio {target_ratio} is below what rank 1 everywhere keeps")
    return best
