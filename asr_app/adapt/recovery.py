"""Recovery stages shared by every method: LoRA on the compressed model, then layer-wise
distillation toward the original ("layerwise") and end-to-end fine-tuning with replay and
logit distillation ("finetune"); "control" fine-tunes the original the same way, for
comparison. Each is resumable from its checkpoints (`compression.distill`, `compression.lora`).
"""

from __future__ import annotations

import json
import random
import time

from asr_app.adapt.data import LazyBatches, batch_order
from asr_app.adapt.state import optimizer_from_tensors, optimizer_to_tensors, save_model_state, save_tensors

REFRESH_LR_SCALE = 0.1  # of the stage's learning rate, in a refresh (asr_app.adapt.refresh)
STAGE_BUDGET_SHARE = {"layerwise": 0.25, "finetune": 0.6, "control": 1.0}  # of the time left


def train_stage(ctx, stage: str, model, kind: str | None = None):
    """LoRA + one training loop + merge, resumable from its checkpoints.

    Batches are shuffled by a generator seeded per stage, so a resumed stage sees the
    same batch order as an uninterrupted one and skips the steps already taken.

    Args:
        ctx: the pipeline's `Context`; stage: "layerwise", "finetune" or "control", the
            name its state and files are kept under;
        model: the model to train (the compressed one, or a copy of the original).
        kind: which of the three it is when `stage` names another (a progressive cut's
            recovery, "adaptwin.recover1", is a "layerwise"); default `stage`.
    Returns:
        The trained model with the adapters merged, every parameter frozen.
    """
    from safetensors import safe_open

    from asr_app.compression.distill import TrainConfig, finetune, layerwise_distill
    from asr_app.compression.lora import add_lora, lora_targets, merge_lora

    opts, folder = ctx.options, ctx.folder
    if kind is None:  # a method stage that trains (a progressive recovery) was announced by the pipeline
        ctx.event("stage", stage)
    final = folder / f"{stage}.safetensors"
    done = ctx.done(stage)
    if done and final.is_file():
        from safetensors.torch import load_model

        load_model(model, str(final), strict=True)
        ctx.report.stages[stage] = done
        return model
    t0 = time.monotonic()
    kind = stage if kind is None else kind
    layerwise = kind == "layerwise"
    windows = ctx.speaker + ctx.replay  # layer-wise needs no labels: other voices add diversity
    epochs = opts.layerwise_epochs if layerwise else opts.finetune_epochs
    # a refresh (asr_app.adapt.refresh) takes its share of a full run's steps
    share = opts.refresh_share if opts.refresh_from else 1.0
    steps = max(1, int(round(epochs * share * len(windows) / opts.batch_size)))
    # steps count passes over the unperturbed windows; batches come from the whole pool
    pool = windows + ctx.perturbed
    rng = random.Random(f"{opts.seed}-{stage}")  # each stage name its own batch order
    chunks: list[list[int]] = []
    while len(chunks) < steps:
        chunks += batch_order(len(pool), opts.batch_size, rng)
    batches = LazyBatches(pool, chunks, with_labels=not layerwise)  # stacked when a step reads them
    cfg = TrainConfig(
        steps=steps,
        # a refresh goes on from a trained model: a tenth of the peak rate (the full rate
        # undid its layer-wise fit: loss 0.053 -> 0.097 over 8 steps on a 10-minute profile)
        lr=(opts.layerwise_lr if layerwise else opts.finetune_lr) * (REFRESH_LR_SCALE if opts.refresh_from else 1.0),
        kd_weight=opts.kd_weight,
        teacher_input_weight=opts.layerwise_teacher_input,
        vtlp=opts.layerwise_vtlp,
        layer_loss=opts.layerwise_loss,
        padding_weight=opts.layerwise_padding_weight,
        attention_kl=opts.layerwise_attention_kl,
        deadline_s=ctx.stage_deadline(STAGE_BUDGET_SHARE[kind]),
        checkpoint_every=opts.checkpoint_every,
    )
    if layerwise:
        part = "encoder"
    elif opts.finetune_lora == "encoder" and opts.compresses_decoder:
        part = "both"  # the decoder's factors are recovered in fine-tuning only
    else:
        part = opts.finetune_lora
    peft_model = add_lora(model, opts.lora_rank, targets=lora_targets(part))
    ckpt = folder / f"{stage}.ckpt.safetensors"
    opt_state, start = None, 0
    if ckpt.is_file():
        with safe_open(str(ckpt), "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        lora = {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")}
        peft_model.load_state_dict(lora, strict=False)
        opt_state = optimizer_from_tensors(
            {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}, json.loads(meta["optimizer"])
        )
        start = int(meta["step"])
        ctx.event("info", f"{stage}: resuming at step {start} of {steps}")

    def on_checkpoint(step, optimizer_state):
        # one file: adapter weights, optimizer state and the step can never disagree
        lora = {f"lora.{k}": v for k, v in peft_model.state_dict().items() if "lora_" in k}
        opt_t, opt_meta = optimizer_to_tensors(optimizer_state)
        save_tensors(
            {**lora, **{f"opt.{k}": v for k, v in opt_t.items()}},
            ckpt,
            {"step": str(step), "optimizer": json.dumps(opt_meta)},
        )

    on_step = lambda step, loss: ctx.event("progress", (stage, step, steps, loss))  # noqa: E731
    teacher = ctx.teacher
    if layerwise:
        result = layerwise_distill(peft_model, teacher, batches, cfg, opt_state, start, on_step, on_checkpoint)
    else:
        result = finetune(
            peft_model,
            batches,
            cfg,
            teacher if opts.kd_weight > 0 and not ctx.vocabulary_changed else None,
            opt_state,
            start,
            on_step,
            on_checkpoint,
        )
    model = merge_lora(peft_model)
    for p in model.parameters():
        p.requires_grad_(False)
    save_model_state(model, final)
    result = {"wall_s": round(time.monotonic() - t0, 1), "planned_steps": steps, **result}
    ctx.finish(stage, result)
    ckpt.unlink(missing_ok=True)
    ctx.report.stages[stage] = result
    return model
