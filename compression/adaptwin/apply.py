"""Model surgery: factor a Whisper encoder (and optionally the decoder's feed-forward
layers) by a CompressionPlan, checked key by key."""

from __future__ import annotations

from torch import nn

from asr_app.compression.adaptwin.config import CompressionPlan, LayerPlan
from asr_app.compression.adaptwin.layer import LowRankLinear, TwinSelfAttention


def encoder_of(model: nn.Module) -> nn.Module:
    """The `WhisperEncoder` of a `WhisperForConditionalGeneration` or `WhisperModel`."""
    return model.model.encoder if hasattr(model, "model") else model.encoder


def decoder_of(model: nn.Module) -> nn.Module:
    """The `WhisperDecoder` of a `WhisperForConditionalGeneration` or `WhisperModel`."""
    return model.model.decoder if hasattr(model, "model") else model.decoder


def _check_attention(old: nn.Module, new: TwinSelfAttention, where: str) -> None:
    """Key by key: same names (less the folded value bias), shapes as the ranks say."""
    old_keys = {k: tuple(v.shape) for k, v in old.state_dict().items()}
    new_keys = {k: tuple(v.shape) for k, v in new.state_dict().items()}
    expected = set(old_keys) - {"v_proj.bias"}
    problems = sorted(set(new_keys) ^ expected)
    qk, vo, d = sum(new.ranks), sum(new.vo_ranks), new.embed_dim
    want = {"q_proj.weight": (qk, d), "q_proj.bias": (qk,), "k_proj.weight": (qk, d),
            "v_proj.weight": (vo, d), "out_proj.weight": (d, vo), "out_proj.bias": (d,)}
    problems += [f"{k}: {new_keys.get(k)} != {s}" for k, s in want.items() if new_keys.get(k) != s]
    if problems:
        raise ValueError(f"{where}: surgery mismatch in keys {problems}")


def _check_linear(old: nn.Linear, new: LowRankLinear, where: str) -> None:
    """weight -> down.weight (rank, in) + up.weight (out, rank); bias -> up.bias."""
    new_keys = {k: tuple(v.shape) for k, v in new.state_dict().items()}
    want = {"down.weight": (new.rank, old.in_features), "up.weight": (old.out_features, new.rank)}
    if old.bias is not None:
        want["up.bias"] = (old.out_features,)
    problems = sorted(set(new_keys) ^ set(want)) + [f"{k}: {new_keys.get(k)} != {s}" for k, s in want.items()
                                                    if k in new_keys and new_keys[k] != s]
    if problems:
        raise ValueError(f"{where}: surgery mismatch in keys {problems}")


def compress_encoder(model: nn.Module, plan: CompressionPlan, stats=None) -> dict:
    """Replace encoder attention and feed-forward layers by their factors, in place.

    Args:
        model: a `WhisperForConditionalGeneration` (or `WhisperModel`), dense encoder.
        plan: ranks per layer; plan.data_aware needs `stats`.
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
            new = TwinSelfAttention.from_attention(layer.self_attn, lp.qk, lp.vo, cov("attn_in"), plan.mode)
            _check_attention(layer.self_attn, new, f"encoder layer {i} self_attn")
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


def _factor_ffn(layer: nn.Module, lp: LayerPlan, cov, where: str) -> None:
    """fc1/fc2 of `layer` -> `LowRankLinear` at the plan's ranks; cov(kind) gives the input
    second moment for "fc1_in" / "fc2_in" (or None: plain SVD)."""
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
            for name, rank in (("fc1", lp.fc1), ("fc2", lp.fc2)):
                if rank is not None:
                    old = getattr(layers[i], name)
                    setattr(layers[i], name, LowRankLinear(old.in_features, old.out_features, rank, old.bias is not None))


def param_counts(model: nn.Module) -> dict:
    """Parameters of the encoder's self-attention, the whole encoder, the decoder (token
    embedding included) and the whole model.

    Every stored parameter counts, the encoder's fixed sinusoidal positions included (they
    are in the checkpoint). Returns {"encoder_attention": n, "encoder": n, "decoder": n, "model": n}.
    """
    encoder = encoder_of(model)
    attn = sum(p.numel() for layer in encoder.layers for p in layer.self_attn.parameters())
    return {"encoder_attention": attn, "encoder": sum(p.numel() for p in encoder.parameters()),
            "decoder": sum(p.numel() for p in decoder_of(model).parameters()),
            "model": sum(p.numel() for p in model.parameters())}


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
    return {"attention_params_before": counts["before"]["encoder_attention"],
            "attention_params_after": counts["after"]["encoder_attention"], "ranks": plan}
