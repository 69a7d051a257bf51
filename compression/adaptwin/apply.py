"""Model surgery: replace a Whisper encoder's self-attention with TwinSelfAttention."""

from __future__ import annotations

from torch import nn

from asr_app.compression.adaptwin.layer import TwinSelfAttention


def _check_surgery(old: nn.Module, new: TwinSelfAttention, where: str) -> None:
    """Key by key: same names (less the folded value bias), shapes as the ranks say."""
    old_keys = {k: tuple(v.shape) for k, v in old.state_dict().items()}
    new_keys = {k: tuple(v.shape) for k, v in new.state_dict().items()}
    expected = set(old_keys) - {"v_proj.bias"}
    problems = sorted(set(new_keys) ^ expected)
    total, d = sum(new.ranks), new.embed_dim
    want = {"q_proj.weight": (total, d), "q_proj.bias": (total,), "k_proj.weight": (total, d),
            "v_proj.weight": (total, d), "out_proj.weight": (d, total), "out_proj.bias": (d,)}
    problems += [f"{k}: {new_keys.get(k)} != {s}" for k, s in want.items() if new_keys.get(k) != s]
    if problems:
        raise ValueError(f"{where}: surgery mismatch in keys {problems}")


def factor_encoder_attention(model: nn.Module, ranks: dict[int, list[int]] | int) -> dict:
    """Replace each encoder layer's self-attention by its product twins, in place.

    Args:
        model: a `WhisperForConditionalGeneration` (or `WhisperModel`).
        ranks: one rank for every head of every layer, or {layer: [rank per head]}
            (layers not listed stay dense).
    Returns:
        {"attention_params_before": n, "attention_params_after": m, "ranks": {layer: [...]}}.
    Raises:
        ValueError: ranks out of range, or a key/shape mismatch after surgery (listing keys).
    """
    encoder = model.model.encoder if hasattr(model, "model") else model.encoder
    heads = encoder.config.encoder_attention_heads
    plan = {i: [ranks] * heads for i in range(len(encoder.layers))} if isinstance(ranks, int) else dict(ranks)
    before = after = 0
    for i, layer in enumerate(encoder.layers):
        old = layer.self_attn
        n_old = sum(p.numel() for p in old.parameters())
        before += n_old
        if i not in plan:
            after += n_old
            continue
        new = TwinSelfAttention.from_attention(old, plan[i])
        _check_surgery(old, new, f"encoder layer {i}")
        layer.self_attn = new
        after += sum(p.numel() for p in new.parameters())
    return {"attention_params_before": before, "attention_params_after": after, "ranks": plan}
