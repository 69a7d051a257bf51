"""CALD's first training stage: attention transfer (label-free).

Each hybrid layer's feature maps and mixing gain learn to give the attention weights the
teacher's softmax gives on the keys the chunk can reach. Loops take model, data and config
as arguments, as `compression.distill` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from asr_app.compression.cald.apply import hybrid_attentions
from asr_app.compression.cald.mixer import chunk_masks
from asr_app.compression.distill import TrainConfig, _cycle, _Loop, reach_kl, teacher_log_weights
from asr_app.compression.surgery import encoder_of


def transfer_kl(teacher_log: Tensor, student: Tensor, reach: Tensor) -> Tensor:
    """KL(teacher || student) per query over the reachable keys, averaged (nats), computed in
    float32 (`distill.reach_kl`, averaged).

    Args:
        teacher_log: log weights (batch, heads, queries, keys), -inf off `reach`.
        student: weights of the same shape (rows summing to 1 over `reach`).
        reach: (queries, keys) bool.
    Returns:
        A scalar: the mean over batch, heads and queries of sum_k t (log t - log s).
    """
    return reach_kl(teacher_log, student, reach).mean()


def attention_transfer(
    student: nn.Module,
    teacher: nn.Module,
    mel_batches: Sequence[Tensor | tuple[Tensor, Tensor]],
    cfg: TrainConfig,
    chunk_choices: Sequence[int] = (25, 50, 100, 200),
    query_stride: int = 4,
    on_step=None,
) -> dict:
    """Train the hybrid layers' feature maps and mixing gains (nothing else) so that each
    layer's attention weights match the teacher layer's softmax restricted to the keys the
    chunk reaches (KL, per head), with the teacher's own layer inputs.

    A chunk size is drawn per step from `chunk_choices` (a generator seeded by the step, so
    runs repeat); a chunk over the whole window leaves no linear part, so it is not among
    them. Every `query_stride`-th query is compared (the student's weights are still
    computed for every query). Side effect: afterwards only the student's feature maps and
    gains have requires_grad set; the caller sets the flags its next stage needs.

    Args:
        student: a Whisper model whose encoder was converted (`convert_encoder`).
        teacher: the original model (frozen, eval), same architecture before conversion.
        mel_batches: (batch, n_mels, 3000) log-mel windows, or (mel, anything) pairs as the
            adaptation's `LazyBatches` give, cycled.
        cfg: steps, learning rate, weight decay and deadline (its loss fields are unused).
    Returns:
        {"steps": n, "final_loss": mean KL (nats per query) of the last 10 steps}.
    Raises:
        ValueError: a student without hybrid layers, an empty chunk_choices or
            query_stride < 1.
    Source: attention transfer as in Hedgehog (Zhang et al., ICLR 2024) and LoLCATs (Zhang
    et al. 2024); the block-causal restriction is ours.
    """
    hybrids = hybrid_attentions(student)
    if not hybrids:
        raise ValueError("the student has no CALD layers: convert it first (convert_encoder)")
    if not chunk_choices:
        raise ValueError("chunk_choices must name at least one chunk size")
    if query_stride < 1:
        raise ValueError(f"query_stride must be >= 1, got {query_stride}")
    for p in student.parameters():
        p.requires_grad_(False)
    for attn in hybrids:
        for p in (*attn.feature_q.parameters(), *attn.feature_k.parameters(), attn.log_gamma):
            p.requires_grad_(True)
    t_enc, s_enc = encoder_of(teacher), encoder_of(student)
    captured: list[Tensor] = []
    loop = _Loop(student, cfg, None, 0, on_step, None)
    handles = [layer.register_forward_pre_hook(lambda m, a: captured.append(a[0].detach())) for layer in t_enc.layers]
    try:
        for item in _cycle(mel_batches, 0):
            if loop.done():
                break
            mel = item[0] if isinstance(item, tuple) else item
            g = torch.Generator().manual_seed(loop.step)
            chunk = int(chunk_choices[int(torch.randint(len(chunk_choices), (1,), generator=g))])
            captured.clear()
            with torch.no_grad():
                t_enc(mel)
            frames = captured[0].shape[1]
            soft, lin = chunk_masks(frames, chunk, hybrids[0].window_frames, captured[0].device)
            reach = (soft | lin)[::query_stride]
            loss: Tensor | float = 0.0
            for x, t_layer, s_layer in zip(captured, t_enc.layers, s_enc.layers):
                with torch.no_grad():  # the teacher's LayerNorm gets no gradient
                    h = t_layer.self_attn_layer_norm(x)
                    target = teacher_log_weights(t_layer.self_attn, h, soft | lin, query_stride)
                weights = s_layer.self_attn.attention_weights(h, chunk)[..., ::query_stride, :]
                loss = loss + transfer_kl(target, weights, reach)
            loop.update(cast(Tensor, loss) / len(captured))
    finally:
        for handle in handles:
            handle.remove()
    return loop.result()


__all__ = ["attention_transfer", "teacher_log_weights", "transfer_kl"]
