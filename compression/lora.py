"""LoRA adapters (peft) on a Whisper model's linears, dense or factored, and their merge.

Shared by the compression methods' recovery stages. Source: Hu et al., "LoRA: Low-Rank
Adaptation of Large Language Models" (2021), through the peft library.
"""

from __future__ import annotations

from torch import nn

LORA_TARGETS = (
    r".*encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1(\.down|\.up)?|fc2(\.down|\.up)?)"
)
DECODER_LORA_TARGETS = r".*decoder\.layers\.\d+\.((self_attn|encoder_attn)\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)"


def lora_targets(part: str) -> str:
    """peft target pattern for LoRA on the "encoder", the "decoder" or "both".

    Raises:
        ValueError: another `part`.
    """
    patterns = {
        "encoder": LORA_TARGETS,
        "decoder": DECODER_LORA_TARGETS,
        "both": f"(?:{LORA_TARGETS})|(?:{DECODER_LORA_TARGETS})",
    }
    if part not in patterns:
        raise ValueError(f"LoRA part must be one of {sorted(patterns)}, got {part!r}")
    return patterns[part]


def add_lora(model: nn.Module, rank: int = 16, alpha: int | None = None, targets: str = LORA_TARGETS):
    """Wrap `model` with peft LoRA adapters on the encoder's attention and FFN linears.

    Args:
        model: Whisper model, dense or factored.
        rank: LoRA rank; alpha: LoRA alpha (default 2 * rank).
    Returns:
        The peft model (only adapter weights trainable).
    Raises:
        ValueError: no module matched `targets`.
    """
    import re

    from peft import LoraConfig, get_peft_model

    # only nn.Linear leaves: a factored fc1 matches the pattern too, its down/up are the linears
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and re.fullmatch(targets, n)]
    if not names:
        raise ValueError(f"no linear module matches {targets!r}")
    cfg = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules=names, lora_dropout=0.0, bias="none")
    return get_peft_model(model, cfg)


def merge_lora(peft_model) -> nn.Module:
    """Fold the LoRA adapters into the weights; returns the plain model."""
    return peft_model.merge_and_unload()
