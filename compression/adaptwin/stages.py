"""AdaPTwin's adaptation stage: allocate ranks under the parameter budget, then factor the
encoder's product twins and feed-forward blocks (and the decoder's, when asked), checked key
by key. Recovery (LoRA, layer-wise distillation, fine-tuning) is the pipeline's.
"""

from __future__ import annotations

import copy
import time

from asr_app.compression.adaptwin.options import AdaptwinOptions


def factor_stage(ctx, opts: AdaptwinOptions) -> dict:
    """Factor a CPU copy of `ctx.teacher` into `ctx.model` and add the method block; with
    `opts.progressive`, at the schedule's first ratio (`cut_stage` takes it further).

    Args:
        ctx: the pipeline's context (`asr_app.adapt.pipeline.Context`): reads `teacher`,
            `stats`, `gains`, `device`, `done(key)`, `decoder_stats(attention)`; sets
            `model` and appends its block to `blocks` (the pipeline counts the parameters).
        opts: AdaptwinOptions.
    Returns:
        The stage result kept in the run state: {"wall_s", "plan"}; a resumed run rebuilds
        the same factors from the saved plan and the saved statistics.
    Raises:
        ValueError: a decoder attention rank above the model's head_dim.
    """
    from asr_app.compression.adaptwin.allocate import allocate_ranks, pruned_plan, uniform_plan
    from asr_app.compression.adaptwin.apply import (
        compress_decoder_attention,
        compress_decoder_ffn,
        compress_encoder,
        decoder_ffn_plan,
    )
    from asr_app.compression.adaptwin.config import CompressionPlan, method_block

    teacher = ctx.teacher
    head_dim = teacher.config.d_model // teacher.config.decoder_attention_heads
    if opts.decoder_attention_rank is not None and opts.decoder_attention_rank > head_dim:
        raise ValueError(
            f"--decoder-attention-rank {opts.decoder_attention_rank} is above the base model's "
            f"head_dim {head_dim}: choose 1..{head_dim}"
        )
    done = ctx.done("adaptwin.factor")
    t0 = time.monotonic()
    model = copy.deepcopy(teacher).cpu()  # factors are computed on the CPU, beside the statistics
    if done:
        plan = CompressionPlan.from_dict(done["plan"])
    elif opts.allocation == "sensitivity":
        plan = allocate_ranks(
            model,
            opts.schedule[0],
            ctx.stats,
            ctx.gains,
            attention=True,
            ffn=opts.ffn,
            centre=opts.centre,
            head_stats=opts.needs_head_stats,
        )
    else:
        plan = uniform_plan(model, opts.target_ratio, attention=True, ffn=opts.ffn, mode=opts.mode)
        plan.data_aware = opts.data_aware
        plan.centre, plan.head_stats = opts.centre, opts.needs_head_stats
    if not done:
        plan.weighted_bias = opts.query_bias_fit == "weighted"
        if opts.ffn_method == "prune":
            plan = pruned_plan(model, plan)
        if opts.decoder_keep is not None:
            plan.decoder = decoder_ffn_plan(model, opts.decoder_keep)
        if opts.decoder_attention_rank is not None:
            plan.decoder_attention = opts.decoder_attention_rank
    compress_encoder(model, plan, ctx.stats)
    if plan.decoder or plan.decoder_attention is not None:
        attention = plan.decoder_attention is not None
        decoder_stats = ctx.decoder_stats(attention) if plan.data_aware else None
        if plan.decoder:
            compress_decoder_ffn(model, plan, decoder_stats)
        if attention:
            compress_decoder_attention(model, plan, decoder_stats)
    model.to(ctx.device)
    for p in model.parameters():
        p.requires_grad_(False)
    ctx.model = model
    ctx.blocks.append(method_block(plan))
    return {"wall_s": done["wall_s"] if done else round(time.monotonic() - t0, 1), "plan": plan.to_dict()}


def recover_stage(ctx, step: int) -> dict:
    """Layer-wise recovery of the model cut so far, before the next progressive cut
    (`ctx.recover`: the pipeline's layerwise distillation under this stage's name)."""
    key = f"adaptwin.recover{step}"
    t0 = time.monotonic()
    ctx.model = ctx.recover(key, ctx.model)
    return {**ctx.report.stages.get(key, {}), "wall_s": round(time.monotonic() - t0, 1)}


def cut_stage(ctx, opts: AdaptwinOptions, step: int) -> dict:
    """Progressive compression, cut `step`: measure the recovered model's own activation
    statistics (recalibrate), allocate ranks for the schedule's next ratio with every
    factored part capped at its present rank, and factor the twins and feed-forward
    factors again at those ranks (the method block's plan is replaced).

    The sensitivity gains are the original model's (the calibrate stage's): measuring them
    needs dense attention.

    Returns:
        {"wall_s", "plan", "ratio"}.
    """
    from asr_app.compression.adaptwin.allocate import allocate_ranks
    from asr_app.compression.adaptwin.apply import compress_encoder
    from asr_app.compression.adaptwin.config import METHOD, CompressionPlan, method_block

    t0 = time.monotonic()
    ratio = opts.schedule[step]
    model = ctx.model.cpu()
    stats = ctx.activation_stats(model, heads=opts.needs_head_stats)
    plan = allocate_ranks(
        model,
        ratio,
        stats,
        ctx.gains,
        attention=True,
        ffn=True,
        centre=opts.centre,
        head_stats=opts.needs_head_stats,
        dense=ctx.teacher,
    )
    plan.weighted_bias = opts.query_bias_fit == "weighted"
    before = next(CompressionPlan.from_dict(b["plan"]) for b in ctx.blocks if b.get("method") == METHOD)
    plan.decoder, plan.decoder_attention = before.decoder, before.decoder_attention  # factored once, kept
    compress_encoder(model, plan, stats)
    model.to(ctx.device)
    for p in model.parameters():
        p.requires_grad_(False)
    ctx.model = model
    ctx.blocks = [b for b in ctx.blocks if b.get("method") != METHOD] + [method_block(plan)]
    return {"wall_s": round(time.monotonic() - t0, 1), "plan": plan.to_dict(), "ratio": ratio}
