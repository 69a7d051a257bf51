"""Model surgery: factor a Whisper encoder (and optionally the decoder's feed-forward and
attention layers) by a CompressionPlan, checked key by key."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from asr_app.compression.adaptwin.config import CompressionPlan, LayerPlan
from asr_app.compression.adaptwin.layer import LowRankLinear, TwinSelfAttention, factor_heads, load_twins
from asr_app.compression.adaptwin.prune import prune_ffn
from asr_app.compression.surgery import decoder_of, encoder_of, key_problems, param_counts


def _check_attention(old_keys: Iterable[str], new: nn.Module, qk: int, vo: int, where: str) -> None:
    """Key by key: the dense attention's names (less the folded value bias), q/k `qk` and
    v/o `vo` wide (the sum of the heads' ranks)."""
    new_keys = {k: tuple(v.shape) for k, v in new.state_dict().items()}
    problems = sorted(set(new_keys) ^ (set(old_keys) - {"v_proj.bias"}))
    d = new.embed_dim
    want = {
        "q_proj.weight": (qk, d),
        "q_proj.bias": (qk,),
        "k_proj.weight": (qk, d),
        "v_proj.weight": (vo, d),
        "out_proj.weight": (d, vo),
        "out_proj.bias": (d,),
    }
    problems += [f"{k}: {new_keys.get(k)} != {s}" for k, s in want.items() if new_keys.get(k) != s]
    if problems:
        raise ValueError(f"{where}: surgery mismatch in keys {problems}")


def _check_linear(old: nn.Linear, new: LowRankLinear, where: str) -> None:
    """weight -> down.weight (rank, in) + up.weight (out, rank); bias -> up.bias."""
    want: dict[str, tuple[int, ...]] = {
        "down.weight": (new.rank, old.in_features),
        "up.weight": (old.out_features, new.rank),
    }
    if (old.up.bias if isinstance(old, LowRankLinear) else old.bias) is not None:
        want["up.bias"] = (old.out_features,)
    problems = key_problems(new, want)
    if problems:
        raise ValueError(f"{where}: surgery mismatch in keys {problems}")


def compress_encoder(model: nn.Module, plan: CompressionPlan, stats=None) -> dict:
    """Replace encoder attention and feed-forward layers by their factors, in place.

    Args:
        model: a `WhisperForConditionalGeneration` (or `WhisperModel`), dense encoder.
        plan: ranks per layer; plan.data_aware needs `stats` (plan.head_stats: collected
            with heads=True).
        stats: `ActivationStats` (second moments of each layer's inputs) or None.
    Returns:
        `param_counts` before and after: {"before": {...}, "after": {...}}.
    Raises:
        ValueError: ranks out of range, data-aware without stats, or a key/shape mismatch
            after surgery (listing the keys).
    """
    if plan.data_aware and stats is None:
        raise ValueError("a data-aware plan needs activation statistics (stats)")
    before = param_counts(model)
    for i, layer, lp, cov in _planned_layers(encoder_of(model).layers, plan.layers, plan, stats, "encoder"):
        if lp.qk is not None:
            twin_stats = None
            if plan.data_aware and (plan.centre or plan.head_stats or plan.weighted_bias):
                twin_stats = stats.twin_statistics(i, plan.centre, plan.head_stats, len(lp.qk))
            new = TwinSelfAttention.from_attention(
                layer.self_attn, lp.qk, lp.vo, cov("attn_in"), plan.mode, twin_stats, plan.weighted_bias
            )
            _check_attention(
                layer.self_attn.state_dict().keys(),
                new,
                sum(new.ranks),
                sum(new.vo_ranks),
                f"encoder layer {i} self_attn",
            )
            layer.self_attn = new
        _factor_ffn(layer, lp, cov, f"encoder layer {i}")
    return {"before": before, "after": param_counts(model)}


def _planned_layers(layers, ranks: dict[int, LayerPlan], plan: CompressionPlan, stats, part: str):
    """(index, layer, its LayerPlan, cov(kind) -> that input's second moment or None) for
    every layer `ranks` names. Raises ValueError on an index out of range."""
    for i, lp in sorted(ranks.items()):
        if not 0 <= i < len(layers):
            raise ValueError(f"plan names {part} layer {i}; the {part} has {len(layers)}")

        def cov(kind: str, i: int = i):
            return getattr(stats, kind)[i] if plan.data_aware else None

        yield i, layers[i], lp, cov


def _check_pruned(old1: nn.Linear, old2: nn.Linear, new1: nn.Linear, new2: nn.Linear, keep: int, where: str) -> None:
    """fc1 keeps its keys with `keep` rows, fc2 its keys with `keep` columns."""
    problems = []
    for name, old, new, shape in (
        ("fc1", old1, new1, (keep, old1.in_features)),
        ("fc2", old2, new2, (old2.out_features, keep)),
    ):
        want = {"weight": shape, **({"bias": (shape[0],)} if old.bias is not None else {})}
        problems += key_problems(new, want, f"{name}.")
    if problems:
        raise ValueError(f"{where}: surgery mismatch in keys {problems}")


def _factor_ffn(layer: Any, lp: LayerPlan, cov, where: str) -> None:
    """fc1/fc2 of `layer` (a transformers Whisper encoder or decoder layer) -> `LowRankLinear`
    at the plan's ranks, or both pruned to lp.ffn_keep hidden neurons; cov(kind) gives the
    input second moment for "fc1_in" / "fc2_in" (or None: plain SVD, weight-norm pruning)."""
    if lp.ffn_keep is not None:
        new1, new2, _ = prune_ffn(layer.fc1, layer.fc2, lp.ffn_keep, cov("fc2_in"))
        _check_pruned(layer.fc1, layer.fc2, new1, new2, lp.ffn_keep, where)
        layer.fc1, layer.fc2 = new1, new2
        return
    for name, rank in (("fc1", lp.fc1), ("fc2", lp.fc2)):
        if rank is not None:
            old = getattr(layer, name)
            new = LowRankLinear.from_linear(old, rank, cov(f"{name}_in"))
            _check_linear(old, new, f"{where} {name}")
            setattr(layer, name, new)


def compress_decoder_ffn(model: nn.Module, plan: CompressionPlan, stats=None) -> dict:
    """Replace the decoder's fc1/fc2 named in `plan.decoder` by low-rank factors, in place.

    Args:
        model: a `WhisperForConditionalGeneration` (or `WhisperModel`), dense decoder.
        plan: plan.decoder gives the ranks; plan.data_aware needs `stats`.
        stats: `DecoderStats` (second moments of the decoder fc inputs, `calibrate.py`) or None.
    Returns:
        `param_counts` before and after.
    Raises:
        ValueError: a layer index out of range, data-aware without stats, or a key/shape
            mismatch after surgery.
    """
    if plan.data_aware and plan.decoder and stats is None:
        raise ValueError("a data-aware plan needs the decoder's activation statistics (stats)")
    before = param_counts(model)
    for i, layer, lp, cov in _planned_layers(decoder_of(model).layers, plan.decoder, plan, stats, "decoder"):
        _factor_ffn(layer, lp, cov, f"decoder layer {i}")
    return {"before": before, "after": param_counts(model)}


def _shrink_attention(attn: Any, rank: int) -> None:
    """Give a Hugging Face `WhisperAttention` rank-wide heads: q/k/v_proj (heads*rank, d_model),
    out_proj (d_model, heads*rank), no value bias (folded into out_proj's), head_dim = rank
    and scale 1 (folded into q_proj). Weights are left uninitialized."""
    h, d = attn.num_heads, attn.embed_dim
    kw = {"device": attn.q_proj.weight.device, "dtype": attn.q_proj.weight.dtype}
    attn.q_proj = nn.Linear(d, h * rank, bias=True, **kw)
    attn.k_proj = nn.Linear(d, h * rank, bias=False, **kw)
    attn.v_proj = nn.Linear(d, h * rank, bias=False, **kw)
    attn.out_proj = nn.Linear(h * rank, d, bias=True, **kw)
    attn.head_dim, attn.scaling = rank, 1.0


@torch.no_grad()
def factor_decoder_attention(
    attn: Any, rank: int, cov_q: torch.Tensor | None = None, cov_kv: torch.Tensor | None = None, mode: str = "joint"
) -> None:
    """Factor one decoder `WhisperAttention` (self- or cross-attention) in place: rank-`rank`
    query/key and value/output twins in every head.

    The module stays a `WhisperAttention` (Hugging Face's cached decoding runs unchanged)
    with head_dim = rank, so its KV cache holds (batch, heads, tokens, rank) keys and values
    instead of head_dim-wide ones. Scale and biases fold as in the encoder's twins: scale
    into q_proj, the value bias exactly into out_proj's bias, the query bias's effect by
    least squares. At rank == head_dim it computes the same function to float32 precision.

    Args:
        attn: a dense decoder `WhisperAttention` (transformers).
        rank: per-head rank, 1..head_dim.
        cov_q: (d_model, d_model) second moment of the queries' input, or None (plain SVD).
        cov_kv: the same for the keys' and values' input: the encoder output for cross-
            attention; default `cov_q` (self-attention).
        mode: "joint" (product twins) or "separate" (ablation).
    Raises:
        ValueError: rank out of range, or an attention already factored.
    Source: AdaPTwin (Biju et al., 2024) product twins, applied here to the decoder (ours).
    """
    h, hd, d = attn.num_heads, attn.head_dim, attn.embed_dim
    if h * hd != d or attn.v_proj.bias is None:
        raise ValueError("this decoder attention is already factored")
    if not 1 <= rank <= hd:
        raise ValueError(f"decoder attention rank must be in 1..{hd}, got {rank}")
    twins = factor_heads(attn, [rank] * h, [rank] * h, cov_q, cov_q if cov_kv is None else cov_kv, mode)
    _shrink_attention(attn, rank)
    load_twins(attn, twins)


def compress_decoder_attention(model: nn.Module, plan: CompressionPlan, stats=None) -> dict:
    """Factor every decoder self- and cross-attention at `plan.decoder_attention`, in place.

    Args:
        model: a `WhisperForConditionalGeneration` (or `WhisperModel`), dense decoder attention.
        plan: plan.decoder_attention gives the rank (None: nothing to do); plan.data_aware
            needs `stats`.
        stats: `DecoderStats` with the attention inputs' second moments (`collect_decoder_stats`
            with attention=True), or None.
    Returns:
        `param_counts` before and after.
    Raises:
        ValueError: data-aware without the attention statistics, a rank out of range, or a
            key/shape mismatch after surgery.
    """
    before = param_counts(model)
    rank = plan.decoder_attention
    if rank is None:
        return {"before": before, "after": before}
    if plan.data_aware and (stats is None or stats.self_in is None):
        raise ValueError("a data-aware plan needs the decoder attention inputs' statistics (stats)")
    aware = plan.data_aware
    for i, layer in enumerate(decoder_of(model).layers):
        sites = (
            ("self_attn", stats.self_in[i] if aware else None, None),
            ("encoder_attn", stats.cross_in[i] if aware else None, stats.audio_in if aware else None),
        )
        for name, cov_q, cov_kv in sites:
            attn = getattr(layer, name)
            old_keys = set(attn.state_dict())
            factor_decoder_attention(attn, rank, cov_q, cov_kv, plan.mode)
            width = attn.num_heads * rank
            _check_attention(old_keys, attn, width, width, f"decoder layer {i} {name}")
    return {"before": before, "after": param_counts(model)}


def decoder_ffn_plan(model: nn.Module, keep: float) -> dict[int, LayerPlan]:
    """One rank for every decoder fc1/fc2 that keeps about `keep` of their parameters.

    Rank r costs r * (in + out) weights against in * out dense, so r = keep * in * out / (in + out).
    Raises:
        ValueError: keep outside (0, 1).
    """
    if not 0 < keep < 1:
        raise ValueError(f"the decoder's kept share must be in (0, 1), got {keep}")
    decoder = decoder_of(model)
    fc = decoder.layers[0].fc1
    rank = max(1, int(keep * fc.in_features * fc.out_features / (fc.in_features + fc.out_features)))
    return {i: LayerPlan(fc1=rank, fc2=rank) for i in range(len(decoder.layers))}


def build_structure(model: nn.Module, plan: CompressionPlan) -> None:
    """Give a freshly built dense model the plan's factored modules (weights to be loaded).

    Used to load a saved compressed model: build the dense architecture from its
    config.json, call this, then load the safetensors with strict key checking.
    """
    encoder = encoder_of(model)
    for i, lp in sorted(plan.layers.items()):
        layer = encoder.layers[i]
        if lp.qk is not None:
            layer.self_attn = TwinSelfAttention(layer.self_attn.embed_dim, lp.qk, lp.vo)
    decoder = decoder_of(model)
    for layers, part in ((encoder.layers, plan.layers), (decoder.layers, plan.decoder)):
        for i, lp in sorted(part.items()):
            if lp.ffn_keep is not None:
                old1, old2 = layers[i].fc1, layers[i].fc2
                layers[i].fc1 = nn.Linear(old1.in_features, lp.ffn_keep, bias=old1.bias is not None)
                layers[i].fc2 = nn.Linear(lp.ffn_keep, old2.out_features, bias=old2.bias is not None)
            for name, rank in (("fc1", lp.fc1), ("fc2", lp.fc2)):
                if rank is not None:
                    old = getattr(layers[i], name)
                    setattr(
                        layers[i], name, LowRankLinear(old.in_features, old.out_features, rank, old.bias is not None)
                    )
    if plan.decoder_attention is not None:
        for layer in decoder.layers:
            _shrink_attention(layer.self_attn, plan.decoder_attention)
            _shrink_attention(layer.encoder_attn, plan.decoder_attention)


def factor_encoder_attention(model: nn.Module, ranks: dict[int, list[int]] | int) -> dict:
    """Factor only the encoder self-attention (plain Frobenius, joint), in place.

    Args:
        model: a `WhisperForConditionalGeneration` (or `WhisperModel`).
        ranks: one rank for every head of every layer, or {layer: [rank per head]}
            (layers not listed stay dense).
    Returns:
        {"attention_params_before": n, "attention_params_after": m, "ranks": {layer: [...]}}.
    Raises:
        ValueError: ranks out of range, or a key/shape mismatch after surgery (listing keys).
    """
    encoder = encoder_of(model)
    heads = encoder.config.encoder_attention_heads
    plan = {i: [ranks] * heads for i in range(len(encoder.layers))} if isinstance(ranks, int) else dict(ranks)
    counts = compress_encoder(model, CompressionPlan({i: LayerPlan(r, r) for i, r in plan.items()}, data_aware=False))
    return {
        "attention_params_before": counts["before"]["encoder_attention"],
        "attention_params_after": counts["after"]["encoder_attention"],
        "ranks": plan,
    }
