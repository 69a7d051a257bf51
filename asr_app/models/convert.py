"""Convert a CTranslate2 / faster-whisper Whisper model directory to Hugging Face format.

Output: a directory loadable with `WhisperForConditionalGeneration.from_pretrained`,
`WhisperTokenizer.from_pretrained`, `WhisperFeatureExtractor.from_pretrained` and
`GenerationConfig.from_pretrained`, weights as float32 safetensors.

Facts about the shipped CTranslate2 files that each cost a wrong transcript until handled
(each has a regression test in tests/test_convert.py):

(a) An English-only model's generation config must carry no `lang_to_id` / `task_to_id`,
    not even empty ones: transformers then forces a language token and tiny.en answers
    "Thank you for watching!".
(b) The 107 tokens from `<|endoftext|>` to `<|notimestamps|>` must be registered as special
    tokens: the tokenizer takes `all_special_ids[-1] + 1` as the first timestamp, and without
    them every timestamp shifts by 106 x 0.02 s = 2.12 s.
(c) The shipped tokenizer.json lacks the 1501 timestamp tokens `<|0.00|>` ... `<|30.00|>`;
    they are added here (as ordinary added tokens, after the special ones).
(d) tiny.en's config.json `lang_ids` start one token late (at `<|zh|>`); language tokens
    are taken from tokenizer.json instead.

Weight layout: CTranslate2's self-attention `linear_0` fuses q, k, v by rows (its k bias is
zeros: Hugging Face's `k_proj` has no bias); cross-attention `linear_0` is q and `linear_1`
fuses k, v; the output projection is tied to the token embedding.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from asr_app.errors import ModelError
from asr_app.models.ct2 import Ct2Model

N_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|> in 0.02 s steps
_LANGUAGE_TOKEN = re.compile(r"^<\|([a-z]{2,3}|haw|yue)\|>$")


def _whisper_dims(ct2: Ct2Model) -> dict:
    enc_layers = {int(m.group(1)) for n in ct2.variables if (m := re.match(r"encoder/layer_(\d+)/", n))}
    dec_layers = {int(m.group(1)) for n in ct2.variables if (m := re.match(r"decoder/layer_(\d+)/", n))}
    if not enc_layers or not dec_layers:
        raise ModelError("CTranslate2 model has no encoder/decoder layers: is it a Whisper model?")
    vocab_size, d_model = ct2.get("decoder/embeddings/weight").shape
    return {
        "vocab_size": int(vocab_size),
        "d_model": int(d_model),
        "num_mel_bins": int(ct2.get("encoder/conv1/weight").shape[1]),
        "encoder_layers": len(enc_layers),
        "decoder_layers": len(dec_layers),
        "encoder_attention_heads": int(ct2.get("encoder/num_heads")),
        "decoder_attention_heads": int(ct2.get("decoder/num_heads")),
        "encoder_ffn_dim": int(ct2.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        "decoder_ffn_dim": int(ct2.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        "max_source_positions": int(ct2.get("encoder/position_encodings/encodings").shape[0]),
        "max_target_positions": int(ct2.get("decoder/position_encodings/encodings").shape[0]),
    }


def ct2_to_hf_state_dict(ct2: Ct2Model, dims: dict) -> dict[str, np.ndarray]:
    """Map CTranslate2 Whisper variables to `WhisperForConditionalGeneration` keys.

    Args:
        ct2: the parsed model (float32 arrays).
        dims: from `_whisper_dims` (layer counts, d_model).
    Returns:
        Hugging Face state dict of float32 arrays, without `proj_out.weight` (tied).
    Raises:
        ModelError: a k-projection bias that is not zero (the layout would be misread).
    """
    d = dims["d_model"]
    sd: dict[str, np.ndarray] = {}

    def ln(dst: str, src: str):
        sd[f"{dst}.weight"] = ct2.get(f"{src}/gamma")
        sd[f"{dst}.bias"] = ct2.get(f"{src}/beta")

    def lin(dst: str, src: str, bias: bool = True):
        sd[f"{dst}.weight"] = ct2.get(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = ct2.get(f"{src}/bias")

    def fused_self_attention(dst: str, src: str):
        w, b = ct2.get(f"{src}/linear_0/weight"), ct2.get(f"{src}/linear_0/bias")
        for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
            sd[f"{dst}.{name}.weight"] = w[i * d : (i + 1) * d]
            if name != "k_proj":
                sd[f"{dst}.{name}.bias"] = b[i * d : (i + 1) * d]
        if np.abs(b[d : 2 * d]).max() != 0:
            raise ModelError(f"{src}: k bias is not zero; unexpected CTranslate2 layout")
        lin(f"{dst}.out_proj", f"{src}/linear_1")

    for side, hf in (("encoder", "model.encoder"), ("decoder", "model.decoder")):
        n_layers = dims[f"{side}_layers"]
        for i in range(n_layers):
            src, dst = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            fused_self_attention(f"{dst}.self_attn", f"{src}/self_attention")
            ln(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            lin(f"{dst}.fc1", f"{src}/ffn/linear_0")
            lin(f"{dst}.fc2", f"{src}/ffn/linear_1")
            ln(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            if side == "decoder":
                lin(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                kv_w = ct2.get(f"{src}/attention/linear_1/weight")
                kv_b = ct2.get(f"{src}/attention/linear_1/bias")
                sd[f"{dst}.encoder_attn.k_proj.weight"] = kv_w[:d]
                sd[f"{dst}.encoder_attn.v_proj.weight"] = kv_w[d:]
                sd[f"{dst}.encoder_attn.v_proj.bias"] = kv_b[d:]
                lin(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                ln(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        ln(f"{hf}.layer_norm", f"{side}/layer_norm")
        sd[f"{hf}.embed_positions.weight"] = ct2.get(f"{side}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        lin(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = ct2.get("decoder/embeddings/weight")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def _is_timestamp(content: str) -> bool:
    """Whether an added token is a timestamp (<|0.00|> .. <|30.00|>)."""
    return content[2:-2].replace(".", "").isdigit()


class SpecialTokens:
    """Ids of Whisper's special tokens, read from a tokenizer.json's added tokens (timestamp
    tokens among them are left out: they are `timestamp_begin` onwards).

    Raises:
        ModelError: if a required token is missing.
    """

    def __init__(self, added_tokens: list[dict]):
        added_tokens = [t for t in added_tokens if not _is_timestamp(t["content"])]
        by_content = {t["content"]: t["id"] for t in added_tokens}
        try:
            self.eot = by_content["<|endoftext|>"]
            self.sot = by_content["<|startoftranscript|>"]
            self.translate = by_content["<|translate|>"]
            self.transcribe = by_content["<|transcribe|>"]
            self.prev = by_content["<|startofprev|>"]
            self.no_speech = by_content.get("<|nospeech|>", by_content.get("<|nocaptions|>"))
            self.no_timestamps = by_content["<|notimestamps|>"]
        except KeyError as e:
            raise ModelError(f"tokenizer.json lacks Whisper special token {e}") from None
        # (d): language tokens from the tokenizer, between <|startoftranscript|> and <|translate|>.
        self.languages = {
            m.group(1): i
            for c, i in by_content.items()
            if self.sot < i < self.translate and (m := _LANGUAGE_TOKEN.match(c))
        }
        self.timestamp_begin = self.no_timestamps + 1


def build_tokenizer(tokenizer_json: Path):
    """Whisper tokenizer from a CTranslate2 tokenizer.json, fixed per (b) and (c) above.

    Returns:
        (WhisperTokenizer, SpecialTokens).
    Raises:
        ModelError: unreadable tokenizer.json or missing special tokens.
    """
    from tokenizers import AddedToken, Tokenizer
    from transformers import WhisperTokenizer

    try:
        data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
        tok = Tokenizer.from_file(str(tokenizer_json))
    except Exception as e:  # OSError, ValueError, or the bare Exception tokenizers raises
        raise ModelError(f"cannot read {tokenizer_json}: {e}") from None
    special = SpecialTokens(data["added_tokens"])
    if tok.get_vocab_size() == special.timestamp_begin:  # (c)
        tok.add_tokens(
            [AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(N_TIMESTAMPS)]
        )
    eot = "<|endoftext|>"
    extra = [t["content"] for t in sorted(data["added_tokens"], key=lambda t: t["id"]) if t["content"] != eot]
    tokenizer = WhisperTokenizer(
        tokenizer_object=tok,
        unk_token=eot,
        bos_token=eot,
        eos_token=eot,
        pad_token=eot,
        extra_special_tokens=extra,  # (b)
    )
    return tokenizer, special


def build_generation_config(
    special: SpecialTokens,
    suppress_ids: list[int],
    suppress_begin: list[int],
    alignment_heads: list,
    is_multilingual: bool,
):
    """GenerationConfig for `generate()` users; per (a), none of the language maps on .en models."""
    from transformers import GenerationConfig

    cfg = {
        "decoder_start_token_id": special.sot,
        "eos_token_id": special.eot,
        "pad_token_id": special.eot,
        "bos_token_id": special.eot,
        "no_timestamps_token_id": special.no_timestamps,
        "prev_sot_token_id": special.prev,
        "suppress_tokens": list(suppress_ids),
        "begin_suppress_tokens": list(suppress_begin),
        "alignment_heads": [list(h) for h in alignment_heads],
        "max_length": 448,
        "is_multilingual": is_multilingual,
    }
    if is_multilingual:
        cfg["lang_to_id"] = {f"<|{k}|>": v for k, v in special.languages.items()}
        cfg["task_to_id"] = {"transcribe": special.transcribe, "translate": special.translate}
    return GenerationConfig(**cfg)


def convert_ct2_whisper(model_files: list[Path], model_dir: Path, out_dir: Path) -> None:
    """Write a Hugging Face Whisper checkpoint converted from CTranslate2 files into `out_dir`.

    Args:
        model_files: `model.bin`, or its parts in order.
        model_dir: the folder with `config.json` and `tokenizer.json`.
        out_dir: an empty, existing folder (the caller renames it into place).
    Raises:
        ModelError: missing or corrupt files.
    Source: layout from CTranslate2's `WhisperSpec` and its Transformers converter.
    """
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from asr_app.models.ct2 import read_ct2_model

    ct2 = read_ct2_model(model_files)
    if ct2.spec_name != "WhisperSpec":
        raise ModelError(f"{model_files[0]} holds a {ct2.spec_name}, not a Whisper model")
    tokenizer, special = build_tokenizer(model_dir / "tokenizer.json")
    try:
        ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {model_dir / 'config.json'}: {e}") from None
    dims = _whisper_dims(ct2)
    if len(tokenizer) != dims["vocab_size"]:
        raise ModelError(f"tokenizer has {len(tokenizer)} tokens but the model has {dims['vocab_size']} embeddings")
    is_multilingual = dims["vocab_size"] >= 51865
    config = WhisperConfig(
        **dims,
        decoder_start_token_id=special.sot,
        eos_token_id=special.eot,
        pad_token_id=special.eot,
        bos_token_id=special.eot,
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, special.eot]),
        suppress_tokens=ct2_config.get("suppress_ids", []),
        tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(config)
    sd = {k: torch.from_numpy(v) for k, v in ct2_to_hf_state_dict(ct2, dims).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise ModelError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = build_generation_config(
        special,
        ct2_config.get("suppress_ids", []),
        ct2_config.get("suppress_ids_begin", [220, special.eot]),
        ct2_config.get("alignment_heads", []),
        is_multilingual,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=dims["num_mel_bins"]).save_pretrained(out_dir)
