"""CALD's adaptation stages: `convert` (every encoder self-attention becomes a
`HybridSelfAttention` holding its weights) and `transfer` (attention transfer: the feature
maps and mixing gains learn the teacher's attention, label-free). The layer-wise
distillation (layer-normed, in the decoder's cross-attention space for the last layer, with
the per-head attention KL over the keys a chunk reaches) and the fine-tuning with logit
distillation that follow are the pipeline's shared stages; the hybrid layers draw their chunk
size per batch there (dynamic chunking).
"""

from __future__ import annotations

import copy
import random
import time

from asr_app.compression.cald.options import CaldOptions

STAGE_BUDGET_SHARE = 0.15  # of the time left, for attention transfer under --time-budget-min


def set_train_chunks(model, chunks: tuple[int | None, ...]) -> None:
    """Give every hybrid layer of `model` the chunk sizes it draws from in training."""
    from asr_app.compression.cald.apply import hybrid_attentions

    for attn in hybrid_attentions(model):
        attn.train_chunks = tuple(chunks)


def convert_stage(ctx, opts: CaldOptions) -> dict:
    """Convert the encoder of `ctx.model` (or a copy of the teacher) to CALD's mixer.

    Reads `ctx.teacher`, `ctx.model`, `ctx.device`; sets `ctx.model` (every parameter
    frozen) and appends the method block.
    Returns:
        {"wall_s", "layers", "extra_params"}: the feature maps' and gains' parameters added.
    """
    from asr_app.compression.cald.apply import convert_encoder
    from asr_app.compression.cald.config import HybridPlan, method_block

    t0 = time.monotonic()
    model = ctx.model if ctx.model is not None else copy.deepcopy(ctx.teacher)
    before = sum(p.numel() for p in model.parameters())
    layers = convert_encoder(
        model,
        feature_map=opts.feature_map,
        chunk_frames=opts.chunk_frames,
        window_frames=opts.window_frames,
        train_chunks=opts.train_chunk_sizes,
    )
    model.to(ctx.device)
    for p in model.parameters():
        p.requires_grad_(False)
    ctx.model = model
    plan = HybridPlan(opts.feature_map, opts.chunk_frames, opts.window_frames, len(layers))
    ctx.blocks.append(method_block(plan))
    return {
        "wall_s": round(time.monotonic() - t0, 1),
        "layers": len(layers),
        "extra_params": sum(p.numel() for p in model.parameters()) - before,
    }


def transfer_stage(ctx, opts: CaldOptions) -> dict:
    """Attention transfer on the speaker's (and replay) windows, their log-mel only (from
    `ctx.batches`): `opts.transfer_epochs` passes in batches of the pipeline's batch size,
    chunk sizes drawn from `opts.train_chunks` (the whole window left out: it has no linear
    part).

    Returns:
        {"wall_s", "steps", "final_loss"} (KL in nats per query).
    """
    from asr_app.compression.cald.train import attention_transfer
    from asr_app.compression.distill import TrainConfig

    t0 = time.monotonic()
    windows = ctx.speaker + ctx.replay
    batch = ctx.options.batch_size
    steps = int(round(opts.transfer_epochs * len(windows) / batch))
    if steps < 1 or not windows:
        return {"wall_s": 0.0, "steps": 0, "final_loss": None}
    batches = ctx.batches(windows, random.Random(f"{ctx.options.seed}-cald.transfer"), steps)
    cfg = TrainConfig(steps=steps, lr=opts.transfer_lr, deadline_s=ctx.stage_deadline(STAGE_BUDGET_SHARE))
    chunks = [c for c in opts.train_chunk_sizes if c is not None] or [opts.chunk_frames]
    on_step = lambda step, loss: ctx.event("progress", ("cald.transfer", step, steps, loss))  # noqa: E731
    result = attention_transfer(ctx.model, ctx.teacher, batches, cfg, chunks, on_step=on_step)
    for p in ctx.model.parameters():
        p.requires_grad_(False)
    return {"wall_s": round(time.monotonic() - t0, 1), **result}


def resume_train_chunks(ctx, opts: CaldOptions) -> None:
    """After a stage is skipped on resume (the model rebuilt from its saved block, which
    keeps no training settings): the hybrid layers' training chunk sizes again."""
    set_train_chunks(ctx.model, opts.train_chunk_sizes)


__all__ = ["convert_stage", "resume_train_chunks", "set_train_chunks", "transfer_stage"]
