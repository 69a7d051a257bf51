"""Whisper decoding of one 30-second window: greedy or beam search with a KV cache,
timestamp rules, token suppression and temperature fallback.

The model is driven step by step (encoder once, then the decoder one token at a time with
its KV cache) rather than through `generate()`, so the decoding rules are ours and
identical across backends. Rules follow openai-whisper's `decoding.py` and faster-whisper.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

import numpy as np

from asr_app.audio import FRAMES_PER_SECOND, SECONDS_PER_TOKEN

NEG_INF = float("-inf")


@dataclass(frozen=True)
class DecodingOptions:
    """Options of one window's decoding.

    Attributes:
        language: ISO code such as "en"; None detects it (multilingual models only).
        task: "transcribe" or "translate" (multilingual models only).
        beam_size: 1 is greedy; >1 is beam search (patience 1, length-normalized score).
        best_of: candidates sampled at each temperature > 0; the likeliest is kept.
        temperatures: tried in order; the next is used when the result fails the
            compression-ratio or log-probability test (whisper's fallback).
        without_timestamps: decode with `<|notimestamps|>` (no segment times).
        suppress_blank: forbid a blank or end-of-text as the first sampled token.
        max_initial_timestamp_s: the first timestamp may not exceed this (seconds).
        sample_len: the most tokens sampled per window (whisper: 224).
        compression_ratio_threshold: gzip ratio above which output counts as repetitive.
        logprob_threshold: average log-probability below which the output counts as failed.
        no_speech_threshold: with a failed log-probability, a `<|nospeech|>` probability
            above this marks the window silent.
        seed: for sampling at temperature > 0.
    Raises:
        ValueError: from __post_init__ on out-of-range values, naming the field.
    """

    language: str | None = None
    task: str = "transcribe"
    beam_size: int = 1
    best_of: int = 5
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    without_timestamps: bool = False
    suppress_blank: bool = True
    max_initial_timestamp_s: float = 1.0
    sample_len: int = 224
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    seed: int = 0

    def __post_init__(self):
        if self.task not in ("transcribe", "translate"):
            raise ValueError(f"task must be 'transcribe' or 'translate', got {self.task!r}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.best_of < 1:
            raise ValueError(f"best_of must be >= 1, got {self.best_of}")
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be a non-empty tuple of values >= 0, got {self.temperatures}")
        if not 1 <= self.sample_len <= 448:
            raise ValueError(f"sample_len must be in 1..448, got {self.sample_len}")


@dataclass
class DecodingResult:
    """Result of decoding one window.

    Attributes:
        tokens: sampled tokens (text and timestamps), without prompt and end-of-text.
        avg_logprob: sum of sampled log-probabilities / (len(tokens) + 1).
        no_speech_prob: probability of `<|nospeech|>` at the first step.
        compression_ratio: gzip compression ratio of the decoded text.
        temperature: the temperature that produced this result.
        language: the language decoded in.
    """

    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    language: str
    text: str = ""


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log_softmax over the last axis (float32; -inf entries stay -inf)."""
    m = logits.max(axis=-1, keepdims=True)
    shifted = logits - m
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def compression_ratio(text: str) -> float:
    """len(utf-8 bytes) / len(zlib-compressed bytes); high values mean repetition loops."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


class TokenFilter:
    """Masks applied to next-token logits: suppressed tokens, blank start, timestamp rules.

    Args:
        special: the model's SpecialTokens.
        suppress_tokens: ids never to sample (non-speech symbols and task tokens).
        sample_begin: index in the token sequence of the first sampled token.
        options: DecodingOptions.
    Source: openai-whisper `SuppressBlank`, `SuppressTokens`, `ApplyTimestampRules`.
    """

    def __init__(self, special, suppress_tokens: list[int], blank_ids: list[int], sample_begin: int,
                 options: DecodingOptions):
        self.special = special
        self.suppress = np.array(sorted(set(suppress_tokens)), dtype=np.int64)
        self.blank = np.array(blank_ids, dtype=np.int64)
        self.sample_begin = sample_begin
        self.options = options
        self.max_initial_ts_index = round(options.max_initial_timestamp_s / SECONDS_PER_TOKEN)

    def __call__(self, logits: np.ndarray, tokens: list[list[int]]) -> np.ndarray:
        """logits: (beams, vocab) float32, modified in place and returned."""
        n = len(tokens[0])
        if self.options.suppress_blank and n == self.sample_begin:
            logits[:, self.blank] = NEG_INF
        logits[:, self.suppress] = NEG_INF
        if not self.options.without_timestamps:
            self._timestamp_rules(logits, tokens)
        return logits

    def _timestamp_rules(self, logits: np.ndarray, tokens: list[list[int]]):
        ts = self.special.timestamp_begin
        eot = self.special.eot
        logits[:, self.special.no_timestamps] = NEG_INF
        for k, seq in enumerate(tokens):
            sampled = seq[self.sample_begin :]
            last_ts = len(sampled) >= 1 and sampled[-1] >= ts
            penultimate_ts = len(sampled) < 2 or sampled[-2] >= ts
            if last_ts:
                if penultimate_ts:  # a pair closed: text must follow
                    logits[k, ts:] = NEG_INF
                else:  # an open timestamp: the next is a timestamp or end-of-text
                    logits[k, :eot] = NEG_INF
            stamps = [t for t in sampled if t >= ts]
            if stamps:
                # timestamps never decrease; a closing one may equal its opener
                floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
                logits[k, ts:floor] = NEG_INF
        if len(tokens[0]) == self.sample_begin:
            logits[:, :ts] = NEG_INF  # the first sampled token is a timestamp
            logits[:, ts + self.max_initial_ts_index + 1 :] = NEG_INF
        # take a timestamp whenever all timestamps together outweigh the best text token
        logprobs = log_softmax(logits)
        with np.errstate(divide="ignore"):
            ts_logprob = np.log(np.exp(logprobs[:, ts:]).sum(axis=-1))
        text_max = logprobs[:, :ts].max(axis=-1)
        logits[ts_logprob > text_max, :ts] = NEG_INF


class WhisperRunner:
    """Runs the encoder and the decoder step by step with a KV cache (torch backend).

    Runners share one interface (see `asr_app.onnx_backend.OnnxRunner`): `encode`,
    `step`, `reorder`, `expand_features`; tokens, beam indices and logits are numpy, audio
    features and the cache are whatever the backend keeps.

    Args:
        bundle: a loaded `asr_app.models.WhisperBundle`.
    """

    def __init__(self, bundle):
        self.bundle = bundle
        self.model = bundle.model
        self.device = bundle.device

    def encode(self, mel: np.ndarray):
        """mel: (n_mels, 3000) float32 -> audio features (1, audio_ctx=1500, d_model) tensor."""
        import torch

        with torch.no_grad():
            x = torch.from_numpy(mel).unsqueeze(0).to(self.device)
            return self.model.model.encoder(input_features=x).last_hidden_state

    def step(self, tokens: np.ndarray, audio_features, cache):
        """Decoder forward on new tokens.

        Args:
            tokens: (beams, new_tokens) int64, the tokens not yet in the cache.
            audio_features: (beams, audio_ctx, d_model) tensor.
            cache: a transformers `EncoderDecoderCache` or None on the first call.
        Returns:
            (logits of the last position (beams, vocab) float32 numpy, updated cache).
        """
        import torch

        with torch.no_grad():
            out = self.model.model.decoder(
                input_ids=torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=self.device),
                encoder_hidden_states=audio_features,
                past_key_values=cache,
                use_cache=True,
            )
            logits = self.model.proj_out(out.last_hidden_state[:, -1])
        return logits.float().cpu().numpy(), out.past_key_values

    @staticmethod
    def reorder(cache, beam_idx: np.ndarray):
        """Reorder (or expand) the KV cache's beams: beam_idx (beams,) int."""
        import torch

        cache.reorder_cache(torch.as_tensor(np.asarray(beam_idx), dtype=torch.long))
        return cache

    @staticmethod
    def expand_features(audio_features, beams: int):
        """The same audio features for `beams` beams."""
        return audio_features.expand(beams, -1, -1)


def make_runner(bundle):
    """The runner for a bundle's backend: OnnxRunner for an exported model, else torch."""
    if getattr(bundle, "backend", "torch") == "onnx":
        from asr_app.onnx_backend import OnnxRunner

        return OnnxRunner(bundle)
    return WhisperRunner(bundle)


class WindowDecoder:
    """Decodes one log-mel window: prompt, language, sampling loop, fallback.

    Works on either backend (torch or onnxruntime) through `make_runner`; all token
    logic is numpy.

    Args:
        bundle: loaded model (`WhisperBundle` or `OnnxWhisperBundle`).
        options: DecodingOptions; language None on a multilingual model adapted by
            `asr-app adapt` means the language it was adapted to (`bundle.adapted_language`),
            on other multilingual models detection.
    Raises:
        ValueError: a language or task the model does not support.
    Source: openai-whisper `DecodingTask` and `transcribe.decode_with_fallback`.
    """

    def __init__(self, bundle, options: DecodingOptions):
        if options.language is None and bundle.is_multilingual and bundle.adapted_language:
            # a model adapted with `asr-app adapt` was trained on one language's prefix only;
            # detecting the language with its compressed encoder is not what it learned
            options = replace(options, language=bundle.adapted_language)
        self.bundle = bundle
        self.special = bundle.special
        self.options = options
        self.runner = make_runner(bundle)
        tok = bundle.tokenizer
        suppress = list(bundle.model.generation_config.suppress_tokens or [])
        sp = self.special
        suppress += [sp.sot, sp.prev, sp.translate, sp.transcribe]
        if sp.no_speech is not None:
            suppress.append(sp.no_speech)
        lm = tok.convert_tokens_to_ids("<|startoflm|>")
        if isinstance(lm, int) and lm != tok.unk_token_id:
            suppress.append(lm)
        self.suppress = suppress
        self.blank = tok.encode(" ", add_special_tokens=False) + [sp.eot]
        codes = ", ".join(sorted(sp.languages))
        if not bundle.is_multilingual:
            if options.language not in (None, "en"):
                unknown = "" if options.language in sp.languages else f" ({options.language!r} is no Whisper code)"
                raise ValueError(
                    f"{bundle.name} is English-only: it knows en; --language {options.language}{unknown} needs a "
                    f"multilingual model such as --model base, which knows {codes}"
                )
            if options.task == "translate":
                raise ValueError(f"{bundle.name} is English-only and cannot translate")
        elif options.language is not None and options.language not in sp.languages:
            raise ValueError(f"language {options.language!r} is not known to {bundle.name}; it knows {codes}")
        self._rng = np.random.default_rng(options.seed)

    # -- prompt -----------------------------------------------------------------------------
    def prompt(self, language: str, previous_tokens: list[int] | None = None) -> list[int]:
        """Decoder prompt: [<|startofprev|> previous...] <|sot|> [<|lang|> <|task|>] [<|notimestamps|>]."""
        sp = self.special
        out = []
        if previous_tokens:
            out += [sp.prev] + previous_tokens[-(448 // 2 - 1) :]
        out.append(sp.sot)
        if self.bundle.is_multilingual:
            out += [sp.languages[language], sp.translate if self.options.task == "translate" else sp.transcribe]
        if self.options.without_timestamps:
            out.append(sp.no_timestamps)
        return out

    def detect_language(self, audio_features) -> str:
        """Most probable language token after <|sot|> (multilingual models); "en" otherwise."""
        if not self.bundle.is_multilingual:
            return "en"
        logits, _ = self.runner.step(np.array([[self.special.sot]]), audio_features, None)
        langs = self.special.languages
        ids = np.array(list(langs.values()))
        best = int(ids[logits[0, ids].argmax()])
        return next(k for k, v in langs.items() if v == best)

    # -- decoding ---------------------------------------------------------------------------
    def decode(self, mel: np.ndarray, previous_tokens: list[int] | None = None) -> DecodingResult:
        """Decode a (n_mels, 3000) window with temperature fallback.

        Returns the first result that passes the compression-ratio and log-probability
        tests; when every temperature fails, the likeliest (highest average
        log-probability) of the results that are not repetitive, or of all of them if each
        one is (faster-whisper's choice; openai-whisper keeps the last, which at
        temperature 1.0 is often a long sampled loop). A result judged silent (no-speech
        probability above the threshold and a failed log-probability) is returned as is
        for the caller to drop.
        """
        audio_features = self.runner.encode(mel)
        language = self.options.language or self.detect_language(audio_features)
        prompt = self.prompt(language, previous_tokens)
        o = self.options
        tried: list[tuple[DecodingResult, bool]] = []
        for temperature in o.temperatures:
            result = self._decode_once(audio_features, prompt, temperature, language)
            too_repetitive = o.compression_ratio_threshold is not None and result.compression_ratio > o.compression_ratio_threshold
            too_unlikely = o.logprob_threshold is not None and result.avg_logprob < o.logprob_threshold
            silent = o.no_speech_threshold is not None and result.no_speech_prob > o.no_speech_threshold
            if (silent and too_unlikely) or (not too_repetitive and not too_unlikely):
                return result
            tried.append((result, too_repetitive))
        pool = [r for r, repetitive in tried if not repetitive] or [r for r, _ in tried]
        return max(pool, key=lambda r: r.avg_logprob)

    def _decode_once(self, audio_features, prompt, temperature, language) -> DecodingResult:
        beams = self.options.beam_size if temperature == 0 else 1
        filt = TokenFilter(self.special, self.suppress, self.blank, len(prompt), self.options)
        if temperature > 0:
            candidates = [self._sample(audio_features, prompt, temperature, filt) for _ in range(self.options.best_of)]
            tokens, sum_logprob, no_speech = max(candidates, key=lambda c: c[1] / max(len(c[0]), 1))
        elif beams == 1:
            tokens, sum_logprob, no_speech = self._sample(audio_features, prompt, temperature, filt)
        else:
            tokens, sum_logprob, no_speech = self._beam_search(audio_features, prompt, beams, filt)
        text = self.bundle.tokenizer.decode([t for t in tokens if t < self.special.eot])
        return DecodingResult(
            tokens=tokens,
            avg_logprob=sum_logprob / (len(tokens) + 1),
            no_speech_prob=no_speech,
            compression_ratio=compression_ratio(text),
            temperature=temperature,
            language=language,
            text=text,
        )

    def _no_speech_prob(self, logits_at_sot: np.ndarray) -> float:
        if self.special.no_speech is None:
            return 0.0
        return float(np.exp(log_softmax(logits_at_sot.astype(np.float32))[self.special.no_speech]))

    def _first_step(self, audio_features, prompt):
        """Run the prompt; return (logits of the last position, cache, no-speech probability)."""
        sot_index = prompt.index(self.special.sot)
        x = np.array([prompt], dtype=np.int64)
        if self.special.no_speech is None:
            logits, cache = self.runner.step(x, audio_features, None)
            return logits, cache, 0.0
        # the no-speech probability is read at the <|sot|> position
        logits, cache = self.runner.step(x[:, : sot_index + 1], audio_features, None)
        no_speech = self._no_speech_prob(logits[0])
        if sot_index + 1 < len(prompt):
            logits, cache = self.runner.step(x[:, sot_index + 1 :], audio_features, cache)
        return logits, cache, no_speech

    def _sample(self, audio_features, prompt, temperature, filt):
        eot = self.special.eot
        logits, cache, no_speech = self._first_step(audio_features, prompt)
        seq = list(prompt)
        sampled: list[int] = []
        sum_logprob = 0.0
        limit = min(self.options.sample_len, 448 - len(prompt))
        for _ in range(limit):
            logits = filt(logits, [seq])
            logprobs = log_softmax(logits)
            if temperature == 0:
                nxt = int(logits[0].argmax())
            else:
                probs = np.exp(log_softmax(logits[0].astype(np.float64) / temperature))
                nxt = int(self._rng.choice(len(probs), p=probs / probs.sum()))
            sum_logprob += float(logprobs[0, nxt])
            if nxt == eot:
                break
            seq.append(nxt)
            sampled.append(nxt)
            logits, cache = self.runner.step(np.array([[nxt]], dtype=np.int64), audio_features, cache)
        return sampled, sum_logprob, no_speech

    def _beam_search(self, audio_features, prompt, beam_size, filt):
        """Beam search with patience 1: stop once `beam_size` hypotheses have ended.

        Score of a finished hypothesis: sum of log-probabilities / its length (whisper's
        default, length_penalty=None).
        """
        eot = self.special.eot
        logits, cache, no_speech = self._first_step(audio_features, prompt)
        # expand the single prompt to `beam_size` identical beams
        cache = self.runner.reorder(cache, np.zeros(beam_size, dtype=np.int64))
        features = self.runner.expand_features(audio_features, beam_size)
        logits = np.repeat(logits[:1], beam_size, axis=0)
        seqs = [list(prompt) for _ in range(beam_size)]
        sums = [0.0] * beam_size
        finished: dict[tuple, float] = {}
        limit = min(self.options.sample_len, 448 - len(prompt))
        n_live = 1  # before the first step all beams are the same
        for _ in range(limit):
            logits = filt(logits, seqs)
            logprobs = log_softmax(logits)
            candidates: dict[tuple, tuple[float, int]] = {}
            for i in range(n_live):
                top = np.argpartition(-logprobs[i], beam_size)[: beam_size + 1]
                top = top[np.argsort(-logprobs[i][top], kind="stable")]
                for lp, tok in zip(logprobs[i][top].tolist(), top.tolist()):
                    key = tuple(seqs[i]) + (tok,)
                    score = sums[i] + lp
                    if key not in candidates or candidates[key][0] < score:
                        candidates[key] = (score, i)
            new_seqs, new_sums, sources = [], [], []
            for key, (score, src) in sorted(candidates.items(), key=lambda kv: -kv[1][0]):
                if key[-1] == eot:
                    if len(finished) < beam_size:
                        finished[key[:-1]] = score
                elif len(new_seqs) < beam_size:
                    new_seqs.append(list(key))
                    new_sums.append(score)
                    sources.append(src)
            if len(finished) >= beam_size or not new_seqs:
                break
            n_live = len(new_seqs)
            while len(new_seqs) < beam_size:  # keep tensor shapes fixed
                new_seqs.append(new_seqs[-1])
                new_sums.append(new_sums[-1])
                sources.append(sources[-1])
            cache = self.runner.reorder(cache, np.array(sources, dtype=np.int64))
            seqs, sums = new_seqs, new_sums
            nxt = np.array([[s[-1]] for s in seqs], dtype=np.int64)
            logits, cache = self.runner.step(nxt, features, cache)
        if not finished:
            finished = {tuple(seqs[i]): sums[i] for i in range(n_live)}
        n_prompt = len(prompt)

        def normalized(item):
            seq, score = item
            return score / max(len(seq) - n_prompt, 1)

        best, score = max(finished.items(), key=normalized)
        return list(best[n_prompt:]), score, no_speech


def tokens_to_segments(tokens: list[int], timestamp_begin: int, time_offset_s: float,
                       segment_frames: int) -> tuple[list[tuple[float, float, list[int]]], int]:
    """Split one window's tokens into segments at timestamp pairs, and say how far to seek.

    Args:
        tokens: sampled tokens of one window (no prompt, no end-of-text).
        timestamp_begin: id of `<|0.00|>`.
        time_offset_s: the window's start in the audio, seconds.
        segment_frames: log-mel frames of real audio in this window (<= 3000).
    Returns:
        (segments, seek_frames): segments as (start_s, end_s, text_tokens) in absolute
        seconds; the number of frames to advance. When the window ends inside an unfinished
        segment, that segment is dropped and the seek stops at its opening timestamp, so the
        next window decodes it whole: no text is lost or repeated at window boundaries.
    Source: openai-whisper `transcribe()` (consecutive-timestamp slicing).
    """
    frames_per_token = 2  # 3000 frames / 1500 timestamp positions
    is_ts = [t >= timestamp_begin for t in tokens]
    single_ending = len(tokens) >= 2 and is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    segments = []
    if cuts:
        if single_ending:
            cuts.append(len(tokens))
        last = 0
        for cut in cuts:
            piece = tokens[last:cut]
            start = (piece[0] - timestamp_begin) * SECONDS_PER_TOKEN
            end = (piece[-1] - timestamp_begin) * SECONDS_PER_TOKEN
            segments.append((time_offset_s + start, time_offset_s + end, [t for t in piece if t < timestamp_begin]))
            last = cut
        if single_ending:
            seek = segment_frames
        else:
            seek = (tokens[last - 1] - timestamp_begin) * frames_per_token
    else:
        duration = segment_frames / FRAMES_PER_SECOND
        stamps = [t for t in tokens if t >= timestamp_begin]
        if stamps and stamps[-1] != timestamp_begin:
            duration = (stamps[-1] - timestamp_begin) * SECONDS_PER_TOKEN
        start = (stamps[0] - timestamp_begin) * SECONDS_PER_TOKEN if stamps else 0.0
        segments.append((time_offset_s + start, time_offset_s + duration, [t for t in tokens if t < timestamp_begin]))
        seek = segment_frames
    return [s for s in segments if s[2]], max(seek, 1)
