"""Activation statistics of a Whisper model, measured on the speaker's own audio.

Shared by the compression methods (AdaPTwin's whitened factorizations use them today):

* `collect_activation_stats`: second moments E[x^T x] of the inputs of every encoder
  self-attention, fc1 and fc2, accumulated window by window (float64 sums, nothing else
  kept), for the whitened factorizations in `factorize.py`; `collect_decoder_stats` does
  the same for the decoder's fc1/fc2 inputs, teacher-forced on the speaker's transcripts
  (only when the decoder's feed-forward layers are factored too).
* `measure_sensitivity`: how much squared error at the encoder output one unit of squared
  error at a site inside layer i causes (sites: attention logits, attention output, fc1
  output, fc2 output), by injecting small Gaussian noise at that site alone. AdaPTwin's
  rank allocator multiplies each factor's expected truncation error by its site's gain,
  so that errors in different layers are compared in one currency.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from asr_app.compression.surgery import decoder_of, encoder_of

SITES = ("qk", "attn_out", "fc1_out", "fc2_out")


_OPTIONAL_KINDS = ("attn_mean", "vo_in", "vo_mean")


@dataclass
class ActivationStats:
    """Mean second moments of layer inputs over every encoder position seen.

    Attributes:
        attn_in: per layer, (d_model, d_model): input of self-attention (after its layer norm).
        fc1_in: per layer, (d_model, d_model): input of fc1 (after the final layer norm).
        fc2_in: per layer, (ffn_dim, ffn_dim): input of fc2 (after GELU).
        positions: number of encoder positions (20 ms each) averaged over.
        attn_mean: per layer, (d_model,): mean of the self-attention input (for mean-
            centred factorization), or None (statistics saved before it was kept).
        vo_in: per layer, (heads, d_model, d_model): second moment of each head's
            attention-mixed input z_h = A_h x (A_h: the head's softmax weights, x the
            attention input), which is what the value/output product W_v^T W_o^T acts on;
            None unless collected with heads=True.
        vo_mean: per layer, (heads, d_model): mean of z_h, or None.
    """

    attn_in: list[Tensor]
    fc1_in: list[Tensor]
    fc2_in: list[Tensor]
    positions: int
    attn_mean: list[Tensor] | None = None
    vo_in: list[Tensor] | None = None
    vo_mean: list[Tensor] | None = None

    def state_dict(self) -> dict[str, Tensor]:
        """Flat tensors for safetensors (float64 kept)."""
        out = {"positions": torch.tensor([self.positions])}
        for kind in ("attn_in", "fc1_in", "fc2_in", *_OPTIONAL_KINDS):
            out.update({f"{kind}.{i}": c.contiguous() for i, c in enumerate(getattr(self, kind) or [])})
        return out

    @classmethod
    def from_state_dict(cls, d: dict[str, Tensor]) -> ActivationStats:
        n = len([k for k in d if k.startswith("attn_in.")])
        get = lambda kind: [d[f"{kind}.{i}"] for i in range(n)]  # noqa: E731
        optional = {kind: get(kind) if f"{kind}.0" in d else None for kind in _OPTIONAL_KINDS}
        return cls(get("attn_in"), get("fc1_in"), get("fc2_in"), int(d["positions"][0]), **optional)

    def twin_statistics(self, layer: int, centre: bool, per_head: bool, heads: int) -> TwinStatistics:
        """The statistics the product twins of encoder layer `layer` are factored with.

        Args:
            centre: subtract the means (covariances instead of second moments) and give
                the means, so the factorization's error on the mean goes into the biases.
            per_head: the value/output twin of each head weighted by that head's
                attention-mixed input (`vo_in`) instead of the layer input. Without it, a
                centred value/output twin takes the layer input's mean for its mixed
                input's (E[A x] differs from E[x] in general: exact on the mean only with
                per_head).
            heads: the layer's number of heads.
        Raises:
            ValueError: statistics that were not collected (`collect_activation_stats`
                with heads=True for per_head; any run of today's for centre).
        """
        cov = self.attn_in[layer]
        mean = None
        if centre:
            if self.attn_mean is None:
                raise ValueError("mean-centred twins need the attention inputs' means: measure the statistics again")
            mean = self.attn_mean[layer]
        if per_head:
            if self.vo_in is None or self.vo_mean is None:
                raise ValueError("per-head value/output statistics were not collected (heads=True)")
            vo_cov = list(self.vo_in[layer])
            vo_mean = list(self.vo_mean[layer]) if centre else [None] * heads
        else:
            vo_cov, vo_mean = [cov] * heads, [mean] * heads
        key_mean = self.attn_mean[layer] if self.attn_mean is not None else None
        return TwinStatistics(cov, mean, vo_cov, vo_mean, key_mean)


@dataclass
class TwinStatistics:
    """What one attention layer's product twins are factored with (float64).

    Attributes:
        qk_cov: (d_model, d_model) second moment of the queries' and keys' input.
        qk_mean: (d_model,) its mean, or None (no centring).
        vo_cov: per head, (d_model, d_model): second moment of what the head's value/output
            product acts on.
        vo_mean: per head, (d_model,) or None.
        key_mean: (d_model,) the keys' input mean whether or not the twins are centred
            (the weighted query-bias fit weighs by the keys' covariance), or None
            (statistics saved before means were kept).
    """

    qk_cov: Tensor
    qk_mean: Tensor | None
    vo_cov: list[Tensor]
    vo_mean: list[Tensor | None]
    key_mean: Tensor | None = None


@torch.no_grad()
def collect_activation_stats(
    model: nn.Module, mel_batches: Iterable[Tensor], on_batch=None, heads: bool = False
) -> ActivationStats:
    """Accumulate input second moments (and the attention inputs' means) of every encoder
    layer over `mel_batches`.

    Args:
        model: Whisper model (dense encoder); run in eval mode on its own device.
        mel_batches: iterable of (batch, n_mels, 3000) float32 log-mel windows.
        on_batch: optional callback(batch_index) for progress.
        heads: also each head's attention-mixed input statistics (`ActivationStats.vo_in`,
            `vo_mean`): the softmax weights are recomputed from the dense attention's
            projections, (batch, heads, T, T) per layer at a time.
    Returns:
        ActivationStats (float64 tensors on CPU).
    Source: activation statistics for whitened low-rank factorization (SVD-LLM style);
        per-head value statistics and mean-centring follow LiteASR (Kamahori et al., 2025).
    """
    encoder = encoder_of(model)
    sums: dict[tuple[str, int], Tensor] = {}
    count = [0]

    def add(key, value: Tensor) -> None:
        sums[key] = sums.get(key, 0) + value.to(torch.float64).cpu()

    def hook(kind: str, i: int, from_kwargs: bool):
        def fn(module, args, kwargs=None):
            x3 = kwargs["hidden_states"] if from_kwargs and "hidden_states" in kwargs else args[0]
            x = x3.reshape(-1, x3.shape[-1]).to(torch.float64)
            add((kind, i), x.T @ x)
            if kind == "attn_in":
                add(("attn_mean", i), x.sum(0))
                if heads:
                    z = _head_probs(module, x3) @ x3[:, None]  # (batch, heads, T, d_model)
                    add(("vo_in", i), torch.einsum("bhtd,bhte->hde", z, z))
                    add(("vo_mean", i), z.sum((0, 2)))
                if i == 0:
                    count[0] += x.shape[0]

        return fn

    handles = []
    for i, layer in enumerate(encoder.layers):
        handles.append(layer.self_attn.register_forward_pre_hook(hook("attn_in", i, True), with_kwargs=True))
        handles.append(layer.fc1.register_forward_pre_hook(hook("fc1_in", i, False)))
        handles.append(layer.fc2.register_forward_pre_hook(hook("fc2_in", i, False)))
    device = next(model.parameters()).device
    try:
        for b, mel in enumerate(mel_batches):
            encoder(mel.to(device))
            if on_batch:
                on_batch(b)
    finally:
        for h in handles:
            h.remove()
    if not count[0]:
        raise ValueError("no audio windows to measure activation statistics on")
    n = len(encoder.layers)
    get = lambda kind: [sums[(kind, i)] / count[0] for i in range(n)]  # noqa: E731
    return ActivationStats(
        get("attn_in"),
        get("fc1_in"),
        get("fc2_in"),
        count[0],
        get("attn_mean"),
        get("vo_in") if heads else None,
        get("vo_mean") if heads else None,
    )


@dataclass
class DecoderStats:
    """Mean second moments of the decoder's inputs over every target token.

    Attributes:
        fc1_in: per decoder layer, (d_model, d_model): input of fc1 (after its layer norm).
        fc2_in: per decoder layer, (ffn_dim, ffn_dim): input of fc2 (after GELU).
        positions: number of token positions averaged over.
        self_in: per decoder layer, (d_model, d_model): input of self-attention (after its
            layer norm), or None when not collected.
        cross_in: per decoder layer, (d_model, d_model): the queries' input of cross-
            attention, or None.
        audio_in: (d_model, d_model): the encoder output that cross-attention's keys and
            values read, averaged over every audio frame, or None.
    """

    fc1_in: list[Tensor]
    fc2_in: list[Tensor]
    positions: int
    self_in: list[Tensor] | None = None
    cross_in: list[Tensor] | None = None
    audio_in: Tensor | None = None

    def state_dict(self) -> dict[str, Tensor]:
        out = {"positions": torch.tensor([self.positions])}
        for kind in ("fc1_in", "fc2_in", "self_in", "cross_in"):
            out.update({f"{kind}.{i}": c.contiguous() for i, c in enumerate(getattr(self, kind) or [])})
        if self.audio_in is not None:
            out["audio_in"] = self.audio_in.contiguous()
        return out

    @classmethod
    def from_state_dict(cls, d: dict[str, Tensor]) -> DecoderStats:
        n = len([k for k in d if k.startswith("fc1_in.")])
        get = lambda kind: [d[f"{kind}.{i}"] for i in range(n)] if f"{kind}.0" in d else None  # noqa: E731
        # fc1_in / fc2_in are in every state_dict of a decoder with layers (the optional kinds may be absent)
        return cls(
            cast("list[Tensor]", get("fc1_in")),
            cast("list[Tensor]", get("fc2_in")),
            int(d["positions"][0]),
            get("self_in"),
            get("cross_in"),
            d.get("audio_in"),
        )


@torch.no_grad()
def collect_decoder_stats(
    model: nn.Module, mel_label_batches: Iterable[tuple[Tensor, Tensor]], on_batch=None, attention: bool = False
) -> DecoderStats:
    """Accumulate the second moments of the decoder fc1/fc2 inputs (and, with `attention`,
    of its self- and cross-attention inputs and of the encoder output), teacher-forced on
    transcripts.

    Args:
        model: `WhisperForConditionalGeneration` (dense decoder), eval mode.
        mel_label_batches: ((batch, n_mels, 3000) float32, (batch, tokens) int64 labels,
            -100 padding, as `finetune` takes them); padded positions are not counted.
        on_batch: optional callback(batch_index).
        attention: also collect self_in, cross_in and audio_in.
    Returns:
        DecoderStats (float64 on CPU).
    Raises:
        ValueError: no labelled token at all.
    """
    decoder = decoder_of(model)
    sums: dict[tuple[str, int], Tensor] = {}
    mask: list[Tensor] = []  # (batch * tokens,) bool of the batch being run
    frames = [0]

    def add(key, x: Tensor) -> None:
        x = x.to(torch.float64)
        sums[key] = sums.get(key, 0) + (x.T @ x).cpu()

    def hook(kind: str, i: int):
        def fn(module, args, kwargs):
            x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            add((kind, i), x.reshape(-1, x.shape[-1])[mask[0]])

        return fn

    def audio_hook(module, args, output):
        x = output.last_hidden_state
        frames[0] += x.shape[0] * x.shape[1]
        add(("audio_in", 0), x.reshape(-1, x.shape[-1]))

    sites = [("fc1", "fc1_in"), ("fc2", "fc2_in")]
    if attention:
        sites += [("self_attn", "self_in"), ("encoder_attn", "cross_in")]
    handles = [
        getattr(layer, site).register_forward_pre_hook(hook(kind, i), with_kwargs=True)
        for i, layer in enumerate(decoder.layers)
        for site, kind in sites
    ]
    if attention:
        handles.append(encoder_of(model).register_forward_hook(audio_hook))
    device = next(model.parameters()).device
    count = 0
    try:
        for b, (mel, labels) in enumerate(mel_label_batches):
            mask[:] = [(labels != -100).reshape(-1).to(device)]
            count += int(mask[0].sum())
            model(input_features=mel.to(device), labels=labels.to(device))
            if on_batch:
                on_batch(b)
    finally:
        for h in handles:
            h.remove()
    if not count:
        raise ValueError("no labelled tokens to measure the decoder's activation statistics on")
    n = len(decoder.layers)
    get = lambda kind: [sums[(kind, i)] / count for i in range(n)]  # noqa: E731
    if not attention:
        return DecoderStats(get("fc1_in"), get("fc2_in"), count)
    return DecoderStats(
        get("fc1_in"), get("fc2_in"), count, get("self_in"), get("cross_in"), sums[("audio_in", 0)] / frames[0]
    )


def _split_heads(attn: Any, x: Tensor) -> Tensor:
    """(batch, T, d_model) -> (batch, heads, T, head_dim); attn: a transformers `WhisperAttention`."""
    b, t, _ = x.shape
    return x.view(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)


def _head_probs(attn: Any, x: Tensor) -> Tensor:
    """Softmax attention weights of every head, (batch, heads, T, T), of a dense Whisper
    attention, or of a compressed one that says them itself (a `head_probs(x)` method, as
    AdaPTwin's `TwinSelfAttention` has)."""
    if hasattr(attn, "head_probs"):
        return attn.head_probs(x)
    return F.softmax(_logits(attn, x), dim=-1)


def _logits(attn: Any, x: Tensor) -> Tensor:
    """Scaled q k^T of a dense Whisper attention (a transformers `WhisperAttention`): (batch, heads, T, T)."""
    q = _split_heads(attn, attn.q_proj(x)) * attn.scaling
    return q @ _split_heads(attn, attn.k_proj(x)).transpose(-1, -2)


class _NoisyLogitsAttention(nn.Module):
    """A dense Whisper self-attention computed by hand, with Gaussian noise on its logits."""

    def __init__(self, attn: Any, std: float, generator: torch.Generator):  # attn: a transformers WhisperAttention
        super().__init__()
        self.attn, self.std, self.generator = attn, std, generator

    def forward(self, hidden_states: Tensor, attention_mask=None, **kwargs):
        a = self.attn
        logits = _logits(a, hidden_states)
        noise = torch.randn(logits.shape, generator=self.generator).to(logits) * self.std
        out = F.softmax(logits + noise, dim=-1) @ _split_heads(a, a.v_proj(hidden_states))
        b, _, t, _ = out.shape
        return a.out_proj(out.transpose(1, 2).reshape(b, t, -1)), None


def _capture_output(encoder: nn.Module, module: nn.Module, mels: Tensor) -> Tensor:
    """One clean encoder pass; returns `module`'s output tensor."""
    seen = {}

    def grab(mod, args, output):
        seen["y"] = output[0] if isinstance(output, tuple) else output

    handle = module.register_forward_hook(grab)
    try:
        encoder(mels)
    finally:
        handle.remove()
    return seen["y"]


def _logits_rms(encoder: nn.Module, attn: nn.Module, mels: Tensor) -> float:
    """RMS of one dense attention's logits (scaled q k^T) on a clean pass."""
    seen = {}

    def grab(mod, args, kwargs):
        seen["x"] = kwargs.get("hidden_states", args[0] if args else None)

    handle = attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        encoder(mels)
    finally:
        handle.remove()
    return float(_logits(attn, seen["x"]).pow(2).mean().sqrt())


def _noisy_pass(encoder: nn.Module, module: nn.Module, mels: Tensor, std: float, gen: torch.Generator) -> Tensor:
    """Encoder output with N(0, std^2) noise added to `module`'s output."""

    def add_noise(mod, args, output):
        y = output[0] if isinstance(output, tuple) else output
        y = y + torch.randn(y.shape, generator=gen).to(y) * std
        return (y,) + tuple(output[1:]) if isinstance(output, tuple) else y

    handle = module.register_forward_hook(add_noise)
    try:
        return encoder(mels).last_hidden_state
    finally:
        handle.remove()


@torch.no_grad()
def measure_sensitivity(model: nn.Module, mels: Tensor, relative_std: float = 0.02, seed: int = 0) -> list[dict]:
    """Encoder-output error per unit of error injected at each site of each layer.

    For each layer i and site s, Gaussian noise of standard deviation sigma (relative_std
    times the site's RMS) is added to that site alone and
        gain[i][s] = mean over positions ||delta encoder output||^2 / (sigma^2 * n_site)
    where n_site is the site's number of elements per position (heads * audio_ctx for the
    logits, d_model for attention and fc2 outputs, ffn_dim for fc1's). A factor whose
    truncation adds squared error E per position at that site then costs about gain * E at
    the encoder output (first order).

    Args:
        model: Whisper model with a dense encoder.
        mels: (batch, n_mels, 3000) log-mel windows of the speaker (one or two suffice).
        relative_std: noise size relative to the site's RMS (small: first-order regime).
    Returns:
        [ {site: gain} for each layer ] with sites "qk", "attn_out", "fc1_out", "fc2_out".
    """
    encoder = encoder_of(model)
    mels = mels.to(next(model.parameters()).device)
    clean = encoder(mels).last_hidden_state
    gen = torch.Generator().manual_seed(seed)
    gains = []
    for layer in encoder.layers:
        row = {}
        attn = layer.self_attn
        # logits: swap in a hand-written attention that adds noise to them
        std = relative_std * _logits_rms(encoder, attn, mels)
        layer.self_attn = _NoisyLogitsAttention(attn, std, gen)
        try:
            noisy = encoder(mels).last_hidden_state
        finally:
            layer.self_attn = attn
        row["qk"] = _gain(noisy, clean, std, attn.num_heads * mels.shape[-1] // 2)
        for site, module, width in (
            ("attn_out", attn, attn.embed_dim),
            ("fc1_out", layer.fc1, layer.fc1.out_features),
            ("fc2_out", layer.fc2, layer.fc2.out_features),
        ):
            std = relative_std * float(_capture_output(encoder, module, mels).pow(2).mean().sqrt())
            row[site] = _gain(_noisy_pass(encoder, module, mels, std, gen), clean, std, width)
        gains.append(row)
    return gains


def _gain(noisy: Tensor, clean: Tensor, std: float, n_site: int) -> float:
    if std <= 0:
        return 0.0
    return float((noisy - clean).pow(2).sum(-1).mean()) / (std**2 * n_site)
