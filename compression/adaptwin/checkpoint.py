"""Save and load a compressed Whisper: `model.safetensors` + `config.json` carrying its plan.

config.json is the Hugging Face `WhisperConfig` plus one "compression" block:
    {"method": "adaptwin", "version": 1, "plan": CompressionPlan.to_dict(), ...caller's metadata}
so any checkpoint loads without flags: build the dense architecture from the config, give
it the plan's factored modules, then load the weights with strict key checking.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from asr_app.compression.adaptwin.apply import build_structure
from asr_app.compression.adaptwin.config import METHOD, METHOD_VERSION, CompressionPlan

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


def save_compressed(model: nn.Module, folder: str | Path, plan: CompressionPlan, metadata: dict) -> Path:
    """Write model.safetensors and config.json (with the plan and `metadata`) into `folder`.

    The config is written last, through a temporary file and a rename, so a folder whose
    config.json names a plan always has the matching weights beside it.
    """
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "model.safetensors.tmp"
    save_model(model, str(tmp))
    os.replace(tmp, folder / "model.safetensors")
    cfg = model.config.to_dict()
    cfg[CONFIG_KEY] = {"method": METHOD, "version": METHOD_VERSION, "plan": plan.to_dict(), **metadata}
    name = folder / f".config.json.{os.getpid()}.tmp"  # an ordinary file: it gets the umask's mode
    with open(name, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(name, folder / "config.json")
    return folder


def load_compressed(folder: str | Path):
    """Load a folder written by `save_compressed`.

    Returns:
        (model, block): `WhisperForConditionalGeneration` in eval mode (float32, CPU) and the
        config's compression block (plan, base model, data, ...).
    Raises:
        ValueError: not a compressed model, an unknown method or version, or weights whose
            keys or shapes do not match the plan (names the keys).
    """
    import torch
    from safetensors.torch import load_model
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text())
    block = raw.pop(CONFIG_KEY, None)
    if block is None:
        raise ValueError(f"{folder}/config.json has no {CONFIG_KEY!r} block: not a compressed model")
    if block.get("method") != METHOD or block.get("version") != METHOD_VERSION:
        raise ValueError(f"{folder}: compression {block.get('method')} v{block.get('version')} is not "
                         f"{METHOD} v{METHOD_VERSION}; upgrade asr-app or re-run adapt")
    config = WhisperConfig.from_dict(raw)
    model = WhisperForConditionalGeneration(config).to(torch.float32)
    build_structure(model, CompressionPlan.from_dict(block["plan"]))
    missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ValueError(f"{folder}/model.safetensors does not match its plan: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")
    return model.eval(), block
