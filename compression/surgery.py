"""Model surgery tools shared by the compression methods: find a Whisper model's encoder and
decoder (through peft wrappers too), and check a replaced module key by key and shape by
shape before its weights are trusted."""

from __future__ import annotations

from typing import Any

from torch import nn


def _unwrap(model: nn.Module, part: str) -> Any:
    m: Any = model
    while not hasattr(m, part):
        if hasattr(m, "model"):
            m = m.model
        elif hasattr(m, "base_model"):
            m = m.base_model
        else:
            raise ValueError(f"{type(model).__name__} has no Whisper {part}")
    return getattr(m, part)


def encoder_of(model: nn.Module) -> Any:
    """The `WhisperEncoder` of a `WhisperForConditionalGeneration` or `WhisperModel`, also
    inside a peft wrapper (typed Any: its layers are reached by attribute, as transformers
    builds them). Raises ValueError for a model without one."""
    return _unwrap(model, "encoder")


def decoder_of(model: nn.Module) -> Any:
    """The `WhisperDecoder` of a `WhisperForConditionalGeneration` or `WhisperModel`, also
    inside a peft wrapper. Raises ValueError for a model without one."""
    return _unwrap(model, "decoder")


def key_problems(new: nn.Module, want: dict[str, tuple], prefix: str = "") -> list[str]:
    """Keys of `new`'s state dict missing from or extra to `want` ({key: shape}), then the
    wanted keys it holds in another shape; empty when `new` matches."""
    keys = {k: tuple(v.shape) for k, v in new.state_dict().items()}
    return [prefix + k for k in sorted(set(keys) ^ set(want))] + [
        f"{prefix}{k}: {keys[k]} != {s}" for k, s in want.items() if k in keys and keys[k] != s
    ]


def check_keys(new: nn.Module, want: dict[str, tuple], where: str) -> None:
    """Raise ValueError naming `where` and every key problem (see `key_problems`)."""
    problems = key_problems(new, want)
    if problems:
        raise ValueError(f"{where}: surgery mismatch in keys {problems}")


def param_counts(model: nn.Module) -> dict:
    """Parameters of the encoder's self-attention, the whole encoder, the decoder (token
    embedding included) and the whole model.

    Every stored parameter counts, the encoder's fixed sinusoidal positions included (they
    are in the checkpoint). Returns {"encoder_attention": n, "encoder": n, "decoder": n, "model": n}.
    """
    encoder = encoder_of(model)
    attn = sum(p.numel() for layer in encoder.layers for p in layer.self_attn.parameters())
    return {
        "encoder_attention": attn,
        "encoder": sum(p.numel() for p in encoder.parameters()),
        "decoder": sum(p.numel() for p in decoder_of(model).parameters()),
        "model": sum(p.numel() for p in model.parameters()),
    }
