"""Sensitivity of the decoder's loss to errors inside the encoder, from squared gradients
(a diagonal empirical Fisher), per attention head for the query/key twins.

`calibrate.measure_sensitivity` asks how much error at the encoder output an error inside
layer i causes, on two windows, by injecting noise. What a user hears is the decoder's
output, and the encoder output's directions do not matter equally to it. Here the
teacher-forced cross-entropy of the model on the speaker's own transcripts is
back-propagated to every site, and
    gain[i][site] = mean over windows and elements of (d loss / d site element)^2,
so a small error delta at the site raises the loss by about 1/2 * sum gain * delta^2
(second order, the Fisher standing in for the Hessian). The query/key site gets one gain per
head (its attention logits), the others one per layer (attention output, fc1 output, fc2
output). The result has `measure_sensitivity`'s layout, so AdaPTwin's allocator takes either.

Source: Fisher-weighted pruning and low-rank factorization (e.g. Hsu et al., "Language model
compression with weighted low-rank factorization", ICLR 2022: FWSVD) use the same squared
gradients as importance; per-head attention-logit gradients and this layout are ours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from asr_app.compression.calibrate import _logits, _split_heads
from asr_app.compression.surgery import encoder_of


class _ProbeAttention(nn.Module):
    """A dense Whisper self-attention computed by hand that keeps its logits' gradient."""

    def __init__(self, attn: Any):  # attn: a transformers WhisperAttention
        super().__init__()
        self.attn = attn
        self.logits: Tensor | None = None

    def forward(self, hidden_states: Tensor, attention_mask=None, **kwargs):
        a = self.attn
        logits = _logits(a, hidden_states)
        logits.retain_grad()
        self.logits = logits
        out = F.softmax(logits, dim=-1) @ _split_heads(a, a.v_proj(hidden_states))
        b, _, t, _ = out.shape
        return a.out_proj(out.transpose(1, 2).reshape(b, t, -1)), None


def fisher_sensitivity(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    on_batch: Callable[[int], None] | None = None,
) -> list[dict]:
    """Squared-gradient gains of the decoder's loss at each encoder site.

    Args:
        model: Whisper (`WhisperForConditionalGeneration`) with a dense encoder; its
            parameters are not changed (no gradient is kept on them).
        batches: ((batch, n_mels, 3000) log-mel, (batch, tokens) int64 labels, -100 padded)
            of the speaker (teacher-forced on their transcripts).
        on_batch: called with each batch's index when it is done.
    Returns:
        [ {"qk": [gain per head], "attn_out": g, "fc1_out": g, "fc2_out": g} per layer ],
        each the mean over batches of the mean squared gradient per element.
    Raises:
        ValueError: no batches.
    Memory: every layer's attention logits, their softmax and the logits' gradient are kept
    through one backward pass (3 x batch x heads x 1500 x 1500 float32 per layer): about
    0.65 GB for tiny.en's 4 layers at batch 1, 17 GB for large-v3's 32; pass one window
    per batch.
    """
    encoder = encoder_of(model)
    device = next(model.parameters()).device
    layers = list(encoder.layers)
    sums: list[dict] = [{"qk": None, "attn_out": 0.0, "fc1_out": 0.0, "fc2_out": 0.0} for _ in layers]
    outputs: dict[tuple[int, str], Tensor] = {}

    def keep(i: int, site: str):
        def hook(module, args, output):
            y = output[0] if isinstance(output, tuple) else output
            y.retain_grad()
            outputs[(i, site)] = y

        return hook

    probes = [_ProbeAttention(layer.self_attn) for layer in layers]
    originals = [layer.self_attn for layer in layers]
    handles = []
    requires = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    n = 0
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        for i, (layer, probe) in enumerate(zip(layers, probes)):
            layer.self_attn = probe
            handles += [
                probe.register_forward_hook(keep(i, "attn_out")),
                layer.fc1.register_forward_hook(keep(i, "fc1_out")),
                layer.fc2.register_forward_hook(keep(i, "fc2_out")),
            ]
        for n, (mel, labels) in enumerate(batches, start=1):
            outputs.clear()
            mel = mel.to(device).requires_grad_(True)  # the graph reaches every site through it
            loss = model(input_features=mel, labels=labels.to(device)).loss
            loss.backward()
            for i, probe in enumerate(probes):
                assert probe.logits is not None and probe.logits.grad is not None
                per_head = probe.logits.grad.pow(2).mean(dim=(0, 2, 3)).double()
                sums[i]["qk"] = per_head if sums[i]["qk"] is None else sums[i]["qk"] + per_head
                for site in ("attn_out", "fc1_out", "fc2_out"):
                    grad = outputs[(i, site)].grad
                    assert grad is not None
                    sums[i][site] += float(grad.pow(2).mean())
                probe.logits = None
            if on_batch:
                on_batch(n - 1)
    finally:
        for h in handles:
            h.remove()
        for layer, attn in zip(layers, originals):
            layer.self_attn = attn
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)
    if n == 0:
        raise ValueError("fisher_sensitivity needs at least one batch")
    return [
        {
            "qk": [float(g) / n for g in row["qk"]],
            **{site: row[site] / n for site in ("attn_out", "fc1_out", "fc2_out")},
        }
        for row in sums
    ]
