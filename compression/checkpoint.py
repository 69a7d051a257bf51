"""Save and load a compressed Whisper: `model.safetensors` + `config.json` with its methods.

config.json is the Hugging Face `WhisperConfig` plus one "compression" block:
    {"methods": [{"method": "adaptwin", "version": 1, "plan": {...}}, ...], ...caller's metadata}
The methods are applied in order; loading builds the dense architecture from the config,
lets each method (looked up in `compression.methods`) rebuild its layers, then loads the
weights with strict key checking. Folders written before method lists existed hold one
method's fields at the top of the block ({"method": "adaptwin", "version": 1, "plan": ...});
they load the same way (`method_blocks`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

from torch import nn

CONFIG_KEY = "compression"


def compression_block(path: str | Path) -> dict | None:
    """The compression block of `path`/config.json, or None (not a compressed model folder)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        block = json.loads(cfg.read_text()).get(CONFIG_KEY)
    except (OSError, ValueError):
        return None
    return block if isinstance(block, dict) else None


def is_compressed_dir(path: str | Path) -> bool:
    """True when `path` holds a config.json with a compression block."""
    return compression_block(path) is not None


def method_blocks(block: dict) -> list[dict]:
    """The method blocks of a compression block, in the order they were applied.

    Raises:
        ValueError: a block with neither a "methods" list nor a single "method".
    """
    if isinstance(block.get("methods"), list):
        return block["methods"]
    if "method" in block:  # the single-method layout of earlier folders
        return [{k: v for k, v in block.items() if k in ("method", "version", "plan")}]
    raise ValueError("the compression block names no method; re-run adapt")


def save_compressed(model: Any, folder: str | Path, methods: list[dict], metadata: dict) -> Path:
    """Write model.safetensors and config.json (the method blocks and `metadata`) into `folder`.

    Args:
        model: a transformers `WhisperForConditionalGeneration` (its config is written).
        methods: one block per method applied, in order: {"method", "version", ...its config}.
        metadata: the rest of the compression block (base model, data, language, ...).
    The config is written last, through a temporary file and a rename, so a folder whose
    config.json names methods always has the matching weights beside it.
    """
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.safetensors.tmp"
    save_model(model, str(tmp))
    os.replace(tmp, folder / "model.safetensors")
    cfg = model.config.to_dict()
    cfg[CONFIG_KEY] = {"methods": list(methods), **metadata}
    name = folder / f".config.json.{os.getpid()}.tmp"  # an ordinary file: it gets the umask's mode
    with open(name, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(name, folder / "config.json")
    return folder


def build_structure(model: nn.Module, block: dict) -> None:
    """Apply each method block's structure to `model` in order (see `method_blocks`)."""
    from asr_app.compression.methods import get_method

    for mb in method_blocks(block):
        # cast: a JSON value, not checked here; get_method raises ValueError for an unknown name
        get_method(cast(str, mb.get("method")), mb.get("version")).build_structure(model, mb)


def load_compressed(folder: str | Path):
    """Load a folder written by `save_compressed` (or by the single-method layout before it).

    Returns:
        (model, block): `WhisperForConditionalGeneration` in eval mode (float32, CPU) and the
        config's compression block (methods, base model, data, ...).
    Raises:
        ValueError: not a compressed model, an unknown method or version, or weights whose
            keys or shapes do not match the methods' structure (names the keys).
    """
    import torch
    from safetensors.torch import load_model
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text())
    block = raw.pop(CONFIG_KEY, None)
    if block is None:
        raise ValueError(f"{folder}/config.json has no {CONFIG_KEY!r} block: not a compressed model")
    try:
        blocks = method_blocks(block)
        from asr_app.compression.methods import get_method

        methods = [get_method(cast(str, mb.get("method")), mb.get("version")) for mb in blocks]  # cast: as above
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    config = WhisperConfig.from_dict(raw)
    # cast: PreTrainedModel.to is wrapped by functools.wraps, whose typeshed type drops the bound self
    model = cast(nn.Module, WhisperForConditionalGeneration(config)).to(torch.float32)
    for method, mb in zip(methods, blocks):
        method.build_structure(model, mb)
    missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{folder}/model.safetensors does not match its plan: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return model.eval(), block
