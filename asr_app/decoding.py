"""Whisper decoding of one 30-second window: greedy or beam search with a KV cache,
timestamp rules, token suppression and temperature fallback.

The model is driven step by step (encoder once, then the decoder one token at a time with
its KV cache) rather than through `generate()`, so the decoding rules are ours and
identical across backends. Rules follow openai-whisper's `decoding.py` and faster-whisper.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from asr_app.decoding_options import DecodingOptions, DecodingResult
from asr_app.whisper_rules import TokenFilter, compression_ratio, log_softmax

__all__ = ["DecodingOptions", "DecodingResult", "WhisperRunner", "WindowDecoder", "make_runner"]


class WhisperRunner:
    """Runs the encoder and the decoder step by step with a KV cache (torch backend).

    Runners share one interface (see `asr_app.onnx.OnnxRunner`): `encode`,
    `step`, `reorder`, `expand_features`; tokens, beam indices and logits are numpy, audio
    features and the cache are whatever the backend keeps.

    Args:
        bundle: a loaded `asr_app.models.WhisperBundle`.
    """

    def __init__(self, bundle):
        self.bundle = bundle
        self.model = bundle.model
        self.device = bundle.device
        from asr_app.compression.cald.apply import hybrid_attentions

        # A CALD encoder (linear-time, block-causal chunks) can encode only what was heard:
        # the content frames plus at least `content_pad_frames` of the window's zero padding,
        # up to a whole chunk, which gives exactly the first frames of the padded window's
        # encoding. None (the default; always for other models) encodes the whole window.
        chunks = {a.chunk_frames for a in hybrid_attentions(self.model)}
        chunk = chunks.pop() if len(chunks) == 1 else None
        self._chunk_mel_frames = 2 * chunk if chunk else None
        self.content_pad_frames: int | None = None

    @property
    def encodes_content(self) -> bool:
        """Whether this runner can encode only a window's audio (a chunked CALD encoder)."""
        return self._chunk_mel_frames is not None

    def encode(self, mel: np.ndarray, content_frames: int | None = None):
        """mel: (n_mels, 3000) float32 -> audio features (1, audio_ctx, d_model) tensor:
        audio_ctx 1500 (the whole window), or for a CALD model told `content_frames` (mel
        frames of audio in the window) the chunks that cover content_frames +
        content_pad_frames: the first audio_ctx frames of the whole window's encoding."""
        import torch

        with torch.no_grad():
            x = torch.from_numpy(mel).unsqueeze(0).to(self.device)
            if content_frames is not None and self.content_pad_frames is not None and self._chunk_mel_frames:
                from asr_app.compression.cald.encoder import encode_frames

                step = self._chunk_mel_frames
                frames = -(-max(1, content_frames + self.content_pad_frames) // step) * step
                if frames < mel.shape[1]:
                    return encode_frames(self.model, x[..., :frames])
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
    """The runner for an `asr_app.models.Bundle`'s `backend`: `OnnxRunner` for "onnx", else
    `WhisperRunner` (torch)."""
    if bundle.backend == "onnx":
        from asr_app.onnx.runtime import OnnxRunner

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
        if options.encoder_padding_s is not None and getattr(self.runner, "encodes_content", False):
            self.runner.content_pad_frames = round(options.encoder_padding_s * 100)  # log-mel frames
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
    def decode(
        self, mel: np.ndarray, previous_tokens: list[int] | None = None, content_frames: int | None = None
    ) -> DecodingResult:
        """Decode a (n_mels, 3000) window with temperature fallback; `content_frames` (the
        log-mel frames of audio before the padding) lets a CALD model encode only those.

        Returns the first result that passes the compression-ratio and log-probability
        tests; when every temperature fails, the likeliest (highest average
        log-probability) of the results that are not repetitive, or of all of them if each
        one is (faster-whisper's choice; openai-whisper keeps the last, which at
        temperature 1.0 is often a long sampled loop). A result judged silent (no-speech
        probability above the threshold and a failed log-probability) is returned as is
        for the caller to drop.
        """
        return self.decode_features(self.runner.encode(mel, content_frames), previous_tokens)

    def decode_features(self, audio_features, previous_tokens: list[int] | None = None) -> DecodingResult:
        """`decode` from audio features already encoded (the runner's `encode` output, or a
        CALD model's live encoding, `asr_app.streaming.incremental`)."""
        language = self.options.language or self.detect_language(audio_features)
        prompt = self.prompt(language, previous_tokens)
        o = self.options
        tried: list[tuple[DecodingResult, bool]] = []
        for temperature in o.temperatures:
            result = self._decode_once(audio_features, prompt, temperature, language)
            too_repetitive = (
                o.compression_ratio_threshold is not None and result.compression_ratio > o.compression_ratio_threshold
            )
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
