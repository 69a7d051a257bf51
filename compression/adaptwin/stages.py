"""AdaPTwin's adaptation stage: allocate ranks under the parameter budget, then factor the
encoder's product twins and feed-forward blocks (and the decoder's, when asked), checked key
by key. Recovery (LoRA, layer-wise distillation, fine-tuning) is the pipeline's.
"""

from __future__ import annotations

import copy
import time

from asr_app.compression.adaptwin.options import AdaptwinOptions


def factor_stage(ctx, opts: AdaptwinOptions) -> dict:
    """Factor a CPU copy of `ctx.teacher` into `ctx.model` and add the method block.

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
        plan = allocate_ranks(model, opts.target_ratio, ctx.stats, ctx.gains, attention=True, ffn=opts.ffn)
    else:
        plan = uniform_plan(model, opts.target_ratio, attention=True, ffn=opts.ffn, mode=opts.mode)
        plan.data_aware = opts.data_aware
    if not done:
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
