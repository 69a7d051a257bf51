"""Distillation loops shared by the compression methods' recovery: layer-wise distillation
of the encoder and end-to-end fine-tuning with replay and logit (KL) distillation. Loops
take model, data and config as arguments; LoRA is in `compression.lora`.

* `layerwise_distill`: each student encoder layer is trained to reproduce the original
  (teacher) layer's output (normalized MSE) from two inputs: the student's own previous
  layer output and the teacher's input to that layer.
  Teacher activations are computed batch by batch and dropped: nothing is cached.
* `finetune`: cross-entropy on the speaker's transcripts (timestamped, as Whisper decodes)
  mixed with replay batches from other voices, plus optional distillation toward the
  teacher's token distributions.
Source: AdaPTwin (Biju et al., 2024) recovery recipe (LoRA + layer-wise fine-tuning);
replay mixing after Moonshine's LoRA fine-tuning recipe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_app.compression.surgery import encoder_of


@dataclass(frozen=True)
class TrainConfig:
    """One training stage.

    Attributes:
        steps: optimizer steps (upper bound; `deadline_s` may stop earlier).
        lr: AdamW learning rate; warm-up over the first 10% of steps, cosine decay after.
        weight_decay: AdamW weight decay.
        kd_weight: weight of the KL term toward the teacher's token distribution (finetune).
        kd_temperature: softmax temperature of that term.
        teacher_input_weight: layer-wise distillation's weight of the term that feeds each
            student layer the teacher's input (0: only the student's own input).
        vtlp: layer-wise distillation warps each window's log-mel along frequency by a factor
            drawn from [1 - vtlp, 1 + vtlp] before teacher and student see it (0: off; see
            `warp_mel`).
        deadline_s: time.monotonic() after which the stage stops, or None.
        checkpoint_every: steps between `on_checkpoint` calls.
    """

    steps: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    kd_weight: float = 0.5
    kd_temperature: float = 1.0
    teacher_input_weight: float = 1.0
    vtlp: float = 0.0
    deadline_s: float | None = None
    checkpoint_every: int = 25

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.teacher_input_weight < 0:
            raise ValueError(f"teacher_input_weight must be >= 0, got {self.teacher_input_weight}")
        if not 0 <= self.vtlp < 0.5:
            raise ValueError(f"vtlp must be in [0, 0.5), got {self.vtlp}")


def _schedule(optimizer, step: int, cfg: TrainConfig) -> None:
    warm = max(1, cfg.steps // 10)
    scale = (
        (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, cfg.steps - warm)))
    )
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * scale


def _optimizer(model: nn.Module, cfg: TrainConfig):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters (did add_lora match any module?)")
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class _Loop:
    """Shared step loop: schedule, deadline, checkpoints, progress, resume from a step."""

    def __init__(
        self,
        model,
        cfg: TrainConfig,
        optimizer_state: dict | None,
        start_step: int,
        on_step: Callable | None,
        on_checkpoint: Callable | None,
    ):
        self.model, self.cfg = model, cfg
        self.optimizer = _optimizer(model, cfg)
        if optimizer_state:
            self.optimizer.load_state_dict(optimizer_state)
        self.step, self.on_step, self.on_checkpoint = start_step, on_step, on_checkpoint
        self.losses: list[float] = []

    def done(self) -> bool:
        return self.step >= self.cfg.steps or (
            self.cfg.deadline_s is not None and time.monotonic() > self.cfg.deadline_s
        )

    def update(self, loss: Tensor) -> None:
        _schedule(self.optimizer, self.step, self.cfg)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        if self.on_step:
            self.on_step(self.step, value)
        if self.on_checkpoint and self.step % self.cfg.checkpoint_every == 0:
            self.on_checkpoint(self.step, self.optimizer.state_dict())

    def result(self) -> dict:
        tail = self.losses[-10:]
        return {"steps": self.step, "final_loss": sum(tail) / len(tail) if tail else None}


def _cycle(batches: Sequence, start: int) -> Iterable:
    i = start
    while True:
        yield batches[i % len(batches)]
        i += 1


def _run_layer(layer: nn.Module, x: Tensor) -> Tensor:
    """Hidden states (batch, positions, d_model) out of one encoder layer, no attention mask
    (some transformers versions return a tuple, others the tensor)."""
    out = layer(x, None)
    return out[0] if isinstance(out, tuple) else out


def warp_mel(mel: Tensor, alpha: Tensor) -> Tensor:
    """Vocal tract length perturbation on log-mel: stretch each window's spectrum along the
    mel axis by its own factor, as a voice with a shorter (alpha > 1: formants move up) or
    longer (alpha < 1) vocal tract would sound.

    Output bin i takes the value at bin i / alpha, linearly interpolated between the two
    nearest bins and held at the top bin beyond it. A linear warp of the mel-bin index, a
    simplification of the piecewise-linear frequency warp of VTLP.

    Args:
        mel: (batch, n_mels, frames) log-mel (any affine scaling, e.g. Whisper's).
        alpha: (batch,) warp factors, 1 = unchanged.
    Returns:
        (batch, n_mels, frames), same dtype and device.
    Raises:
        ValueError: alpha's shape is not (batch,) or a factor is not positive.
    Source: Jaitly & Hinton, "Vocal Tract Length Perturbation (VTLP) improves speech
    recognition" (ICML 2013 workshop).
    """
    if alpha.shape != mel.shape[:1]:
        raise ValueError(f"alpha must have shape ({mel.shape[0]},), got {tuple(alpha.shape)}")
    if bool((alpha <= 0).any()):
        raise ValueError("warp factors must be > 0")
    n = mel.shape[1]
    src = (
        torch.arange(n, device=mel.device, dtype=torch.float32)[None, :] / alpha.to(mel.device, torch.float32)[:, None]
    )
    src = src.clamp(0, n - 1)  # (batch, n_mels)
    lo = src.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    frac = (src - lo).to(mel.dtype)[:, :, None]
    pick = lambda idx: mel.gather(1, idx[:, :, None].expand(-1, -1, mel.shape[2]))  # noqa: E731
    return pick(lo) * (1 - frac) + pick(hi) * frac


def layerwise_distill(
    student,
    teacher: nn.Module,
    mel_batches: Sequence[Tensor],
    cfg: TrainConfig,
    optimizer_state: dict | None = None,
    start_step: int = 0,
    on_step=None,
    on_checkpoint=None,
) -> dict:
    """Train each student encoder layer to reproduce the teacher layer's output.

    Per layer i, with y_i the teacher's output of layer i, the loss is
        nmse(S_i(s_{i-1}), y_i) + teacher_input_weight * nmse(S_i(t_{i-1}), y_i),
    nmse(a, y) = ||a - y||^2 / ||y||^2, s_{i-1} the student's own output of layer i-1
    (detached: each layer's loss only moves that layer) and t_{i-1} the teacher's input to
    layer i. The own-input term teaches the layer to undo the error its inputs already
    carry; alone it also learns corrections that fit only the training voices (measured on
    tiny.en at 45%: train-clean-5 first 40 WER 15.75 after this stage). The teacher-input
    term makes the layer imitate the teacher layer's function itself; alone, errors
    compound in the chain (the end-to-end encoder error grew); the two together gave 11.55.
    With cfg.vtlp > 0 every window is first warped in frequency (`warp_mel`, a factor per
    window drawn from a generator seeded by the step, so a resumed run sees the same):
    teacher and student see the same warped input, so the targets stay exact and the
    training audio sounds like more voices.

    Args:
        student: peft-wrapped (or plain, with trainable parameters) compressed Whisper.
        teacher: the original model (frozen, eval).
        mel_batches: (batch, n_mels, 3000) log-mel windows of the speaker, cycled.
        cfg: steps, lr, deadline, teacher_input_weight; optimizer_state / start_step: to resume.
    Returns:
        {"steps": n, "final_loss": mean loss (per layer, both terms) of the last 10 steps}.
    Source: layer-wise distillation as in AdaPTwin's recovery; the two-input objective is ours.
    """
    t_enc, s_enc = encoder_of(teacher), encoder_of(student)
    captured: list[tuple[Tensor, Tensor]] = []

    def grab(module, args, output):
        captured.append((args[0].detach(), output.detach() if isinstance(output, Tensor) else output[0].detach()))

    loop = _Loop(student, cfg, optimizer_state, start_step, on_step, on_checkpoint)
    student.train()
    device = next(teacher.parameters()).device
    for mel in _cycle(mel_batches, start_step):
        if loop.done():
            break
        if cfg.vtlp > 0:
            g = torch.Generator().manual_seed(loop.step)
            alpha = 1 + cfg.vtlp * (2 * torch.rand(mel.shape[0], generator=g) - 1)
            mel = warp_mel(mel, alpha)
        captured.clear()
        handles = [layer.register_forward_hook(grab) for layer in t_enc.layers]
        try:
            with torch.no_grad():
                t_enc(mel.to(device))
        finally:
            for h in handles:
                h.remove()
        loss: Tensor | float = 0.0
        x = captured[0][0]  # the conv front end is not factored: same input as the teacher's
        for layer, (x_teacher, y) in zip(s_enc.layers, captured):
            out = _run_layer(layer, x.detach())
            scale = y.pow(2).mean()
            loss = loss + F.mse_loss(out, y) / scale
            if cfg.teacher_input_weight > 0:
                imitated = _run_layer(layer, x_teacher)
                loss = loss + cfg.teacher_input_weight * F.mse_loss(imitated, y) / scale
            x = out  # the next layer learns to correct the error its inputs already carry
        # a Tensor: captured is not empty (captured[0] above) and the student has the teacher's layers
        loop.update(cast(Tensor, loss) / len(captured))
    student.eval()
    return loop.result()


def finetune(
    student,
    mel_label_batches: Sequence[tuple[Tensor, Tensor]],
    cfg: TrainConfig,
    teacher: nn.Module | None = None,
    optimizer_state: dict | None = None,
    start_step: int = 0,
    on_step=None,
    on_checkpoint=None,
) -> dict:
    """End-to-end fine-tuning on (log-mel, labels) batches, with optional teacher distillation.

    Args:
        student: peft-wrapped Whisper (compressed or original, for the LoRA-only control).
        mel_label_batches: ((batch, n_mels, 3000) float32, (batch, tokens) int64 labels with
            -100 padding; labels start after <|startoftranscript|>, as Hugging Face expects).
        teacher: the original model for the KL term (cfg.kd_weight), or None.
    Returns:
        {"steps": n, "final_loss": mean loss of the last 10 steps}.
    """
    loop = _Loop(student, cfg, optimizer_state, start_step, on_step, on_checkpoint)
    student.train()
    device = next(student.parameters()).device
    for mel, labels in _cycle(mel_label_batches, start_step):
        if loop.done():
            break
        mel, labels = mel.to(device), labels.to(device)
        out = student(input_features=mel, labels=labels)
        loss = out.loss
        if teacher is not None and cfg.kd_weight > 0:
            with torch.no_grad():
                t_logits = teacher(input_features=mel, labels=labels).logits
            mask = labels != -100
            t = cfg.kd_temperature
            kl = (
                F.kl_div(
                    F.log_softmax(out.logits[mask] / t, -1),
                    F.log_softmax(t_logits[mask] / t, -1),
                    log_target=True,
                    reduction="batchmean",
                )
                * t
                * t
            )
            loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * kl
        loop.update(loss)
    student.eval()
    return loop.result()
