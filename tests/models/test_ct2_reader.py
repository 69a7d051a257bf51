"""CTranslate2 model.bin reader on synthetic files: versions, dtypes, int8 scales, corruption."""

import struct

import numpy as np
import pytest

from asr_app.errors import ModelError
from asr_app.models.ct2 import read_ct2_model


def _string(s: str) -> bytes:
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def write_ct2(path, variables: dict, aliases: dict | None = None, version: int = 6, dtype_ids: dict | None = None):
    """Write a model.bin the way ctranslate2's ModelSpec._serialize does."""
    ids = {
        np.dtype("float32"): 0,
        np.dtype("int8"): 1,
        np.dtype("int16"): 2,
        np.dtype("int32"): 3,
        np.dtype("float16"): 4,
    }
    out = struct.pack("<I", version) + _string("WhisperSpec") + struct.pack("<I", 3)
    out += struct.pack("<I", len(variables))
    for name, arr in variables.items():
        arr = np.asarray(arr)
        out += _string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
        raw = arr.tobytes()
        out += struct.pack("<BI", (dtype_ids or {}).get(name, ids.get(arr.dtype, 0)), len(raw)) + raw
    aliases = aliases or {}
    out += struct.pack("<I", len(aliases))
    for a, t in aliases.items():
        out += _string(a) + _string(t)
    path.write_bytes(out)
    return out


@pytest.mark.parametrize("version", [5, 6])
def test_reads_float16_and_aliases(tmp_path, version):
    w = np.arange(12, dtype=np.float16).reshape(3, 4)
    write_ct2(tmp_path / "model.bin", {"a/weight": w, "flag": np.array(1, np.int8)}, {"b/weight": "a/weight"}, version)
    m = read_ct2_model(tmp_path / "model.bin")
    assert m.binary_version == version
    assert m.get("b/weight").dtype == np.float32
    np.testing.assert_array_equal(m.get("b/weight"), w.astype(np.float32))
    assert int(m.get("flag")) == 1


def test_int8_weights_are_dequantized_with_their_scale(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 7)).astype(np.float32)
    scale = 127.0 / np.abs(w).max(axis=1)  # CTranslate2: q = round(w * scale), per row
    q = np.round(w * scale[:, None]).astype(np.int8)
    write_ct2(tmp_path / "model.bin", {"l/weight": q, "l/weight_scale": scale.astype(np.float32)})
    m = read_ct2_model(tmp_path / "model.bin")
    assert "l/weight_scale" not in m.variables
    np.testing.assert_allclose(m.get("l/weight"), w, atol=np.abs(w).max() / 127)


def test_bfloat16_is_upcast(tmp_path):
    x = np.array([1.5, -2.25, 3.0], np.float32)
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)
    write_ct2(tmp_path / "model.bin", {"x": bf16}, dtype_ids={"x": 5})
    np.testing.assert_array_equal(read_ct2_model(tmp_path / "model.bin").get("x"), x)


def test_split_parts_concatenate(tmp_path):
    raw = write_ct2(tmp_path / "whole.bin", {"x": np.ones((4, 4), np.float32)})
    (tmp_path / "p1").write_bytes(raw[:37])
    (tmp_path / "p2").write_bytes(raw[37:])
    np.testing.assert_array_equal(read_ct2_model([tmp_path / "p1", tmp_path / "p2"]).get("x"), np.ones((4, 4)))


def test_truncated_file_is_a_clear_error(tmp_path):
    raw = write_ct2(tmp_path / "model.bin", {"x": np.ones((64, 64), np.float32)})
    (tmp_path / "model.bin").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelError, match="truncated"):
        read_ct2_model(tmp_path / "model.bin")


def test_unsupported_version_and_garbage(tmp_path):
    write_ct2(tmp_path / "model.bin", {"x": np.ones(2, np.float32)}, version=3)
    with pytest.raises(ModelError, match="binary version 3"):
        read_ct2_model(tmp_path / "model.bin")
    (tmp_path / "junk.bin").write_bytes(b"this is not a model at all")
    with pytest.raises(ModelError):
        read_ct2_model(tmp_path / "junk.bin")


def test_trailing_bytes_rejected(tmp_path):
    raw = write_ct2(tmp_path / "model.bin", {"x": np.ones(2, np.float32)})
    (tmp_path / "model.bin").write_bytes(raw + b"\0\0")
    with pytest.raises(ModelError, match="trailing"):
        read_ct2_model(tmp_path / "model.bin")
