"""Training data of an adaptation: the profile's takes packed into 30-second windows with
timestamped targets (as Whisper decodes), speed-perturbed copies, and shuffled batches.

A run's windows are spilled to a `MelStore` on disk as they are packed and read back one at
a time, and batches are stacked only when a training step reads them (`LazyBatches`), so
memory does not grow with the hours a profile holds."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asr_app.audio import N_SAMPLES, N_TIMESTAMPS, SAMPLE_RATE_HZ, SECONDS_PER_TOKEN, load_audio, log_mel_window
from asr_app.errors import AsrAppError

WINDOW_FILL_S = 29.0  # pack takes up to this length, leaving room before the 30 s edge
PROFILE_LANGUAGE = "en"  # enrollment prompts and imported sets are English


class MelStore:
    """Log-mel windows of one shape in one file of float32, appended as they are packed and
    read back one at a time (the file is started anew when the store is made).

    Args:
        path: the file (its folder is created).
    Raises:
        ValueError: a window of another shape than the first.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"")
        self.shape: tuple[int, ...] | None = None
        self.count = 0

    def add(self, mel: np.ndarray) -> int:
        """Append one (n_mels, frames) window; returns its index."""
        mel = np.ascontiguousarray(mel, dtype=np.float32)
        if self.shape is None:
            self.shape = mel.shape
        elif mel.shape != self.shape:
            raise ValueError(f"window of shape {mel.shape} in a store of {self.shape}")
        with open(self.path, "ab") as f:  # no fsync: a resumed run packs its windows again
            f.write(mel.tobytes())
        self.count += 1
        return self.count - 1

    def read(self, index: int) -> np.ndarray:
        """Window `index`, (n_mels, frames) float32, a fresh writable array.

        Raises:
            IndexError: no such window.
        """
        if not 0 <= index < self.count or self.shape is None:
            raise IndexError(f"window {index} of {self.count} in {self.path}")
        n = int(np.prod(self.shape))
        with open(self.path, "rb") as f:
            f.seek(index * n * 4)
            mel = np.fromfile(f, dtype=np.float32, count=n)
        if mel.size != n:
            raise IndexError(f"window {index} of {self.path} is cut short (the file was truncated)")
        return mel.reshape(self.shape)


@dataclass
class Window:
    """Up to 30 s of packed takes: (n_mels, 3000) log-mel and decoder labels. The log-mel is
    held (`stored_mel`) or, spilled to a `MelStore`, read back on each access of `mel`."""

    stored_mel: np.ndarray | None
    labels: list[int]
    audio_s: float
    store: MelStore | None = None
    index: int = -1

    @property
    def mel(self) -> np.ndarray:
        """(n_mels, 3000) float32."""
        if self.stored_mel is not None:
            return self.stored_mel
        assert self.store is not None, "a Window holds its log-mel or a store to read it from"
        return self.store.read(self.index)


def training_text(text: str) -> str:
    """Transcript as a training target: ALL-CAPS corpora (LibriSpeech) become sentence case,
    so fine-tuning does not teach the model to shout; anything else is kept as written."""
    text = " ".join(text.split())
    if text.isupper():
        text = text.lower()
        text = re.sub(r"\bi\b", "I", text)
        text = text[:1].upper() + text[1:]
    return text


def speed_perturb(signal: np.ndarray, speed: float) -> np.ndarray:
    """Play `signal` `speed` times faster: resample 16 kHz audio to 16 kHz / speed (soxr
    through librosa) and read it back at 16 kHz, so tempo and pitch both scale.

    Args:
        signal: (samples,) float32 at 16 kHz; speed: e.g. 0.9 (slower, lower) or 1.1.
    Returns:
        (about samples / speed,) float32 at 16 kHz.
    Source: speed perturbation for ASR training (Ko et al., Interspeech 2015).
    """
    import librosa

    if speed == 1.0:
        return signal
    return librosa.resample(signal, orig_sr=SAMPLE_RATE_HZ, target_sr=int(round(SAMPLE_RATE_HZ / speed))).astype(
        np.float32
    )


def pack_windows(
    utterances,
    bundle,
    on_progress: Callable[[int], None] | None = None,
    rng: random.Random | None = None,
    speed: float = 1.0,
    store: MelStore | None = None,
) -> list[Window]:
    """Pack utterances in order into windows of at most WINDOW_FILL_S seconds.

    With `rng`, each window is filled only up to a length drawn uniformly from
    (0, WINDOW_FILL_S] (at least one utterance), so training sees windows mostly padded,
    as short recordings are at inference, as well as full ones.

    With `speed` other than 1, every utterance is speed-perturbed first (`speed_perturb`);
    the timestamps follow the perturbed durations.

    Labels follow what the decoder sees after <|startoftranscript|>: [<|en|> <|transcribe|>]
    (multilingual models) then, per utterance, <|start|> text <|end|> in timestamp tokens
    (0.02 s), then <|endoftext|>, as Whisper decodes in timestamp mode.

    Args:
        utterances: `datasets.Utterance`s (audio path, text).
        bundle: the base `WhisperBundle` (tokenizer, feature extractor, special tokens).
        store: each window's log-mel goes there as it is packed (the windows read it back),
            or None: held in memory.
    Returns:
        Windows; utterances longer than a window or unreadable are skipped.
    """
    sp, tok = bundle.special, bundle.tokenizer
    prefix = [sp.languages[PROFILE_LANGUAGE], sp.transcribe] if bundle.is_multilingual else []
    max_ts = sp.timestamp_begin + N_TIMESTAMPS

    def ts(t_s: float) -> int:
        return min(sp.timestamp_begin + int(round(t_s / SECONDS_PER_TOKEN)), max_ts)

    windows: list[Window] = []
    audio: list[np.ndarray] = []
    tokens: list[int] = []
    offset = 0.0
    capacity = [rng.uniform(0, WINDOW_FILL_S) if rng else WINDOW_FILL_S]

    def flush():
        nonlocal audio, tokens, offset
        capacity[0] = rng.uniform(0, WINDOW_FILL_S) if rng else WINDOW_FILL_S
        if audio:
            signal = np.concatenate(audio)[:N_SAMPLES]
            mel = log_mel_window(bundle.feature_extractor, signal)
            labels, audio_s = prefix + tokens + [sp.eot], len(signal) / SAMPLE_RATE_HZ
            if store is None:
                windows.append(Window(mel, labels, audio_s))
            else:
                windows.append(Window(None, labels, audio_s, store, store.add(mel)))
        audio, tokens, offset = [], [], 0.0

    for n, utt in enumerate(utterances):
        try:
            signal = speed_perturb(load_audio(utt.audio), speed)
        except AsrAppError:
            continue
        dur = len(signal) / SAMPLE_RATE_HZ
        if dur > WINDOW_FILL_S:
            continue
        if audio and offset + dur > capacity[0]:
            flush()
        text_ids = tok.encode(" " + training_text(utt.text), add_special_tokens=False)
        tokens += [ts(offset)] + text_ids + [ts(offset + dur)]
        audio.append(signal)
        offset += dur
        if on_progress:
            on_progress(n)
    flush()
    return windows


def evenly(items: list, n: int) -> list:
    """At most `n` items spread evenly over `items` (all of them when there are fewer)."""
    if n <= 0 or not items:
        return []
    step = max(1.0, len(items) / n)
    return [items[int(i * step)] for i in range(min(len(items), n))]


def batch_order(n_windows: int, batch_size: int, rng: random.Random) -> list[list[int]]:
    """One pass over `n_windows` windows in an order shuffled by `rng`: index lists of at
    most `batch_size`."""
    order = list(range(n_windows))
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class LazyBatches(Sequence):
    """Training batches stacked from `windows` only when read (a step at a time), so the
    steps of a long run are never all in memory.

    Args:
        windows: the pool; chunks: one index list per batch (`batch_order`);
        with_labels: items are (mel, labels) pairs, else (mel, audio seconds).
    Items:
        (mel (B, n_mels, 3000) float32, audio_s (B,) float32 seconds of audio in each
        window), or with `with_labels` (mel, labels (B, L) int64 padded with -100).
    """

    def __init__(self, windows: list[Window], chunks: list[list[int]], with_labels: bool):
        self.windows, self.chunks, self.with_labels = windows, chunks, with_labels

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i):
        import torch

        if isinstance(i, slice):
            return LazyBatches(self.windows, self.chunks[i], self.with_labels)
        chunk = [self.windows[j] for j in self.chunks[i]]
        mel = torch.from_numpy(np.stack([w.mel for w in chunk]))
        if not self.with_labels:
            return mel, torch.tensor([w.audio_s for w in chunk], dtype=torch.float32)
        width = max(len(w.labels) for w in chunk)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for k, w in enumerate(chunk):
            labels[k, : len(w.labels)] = torch.tensor(w.labels)
        return mel, labels


def batches(windows: list[Window], batch_size: int, rng: random.Random, with_labels: bool) -> LazyBatches:
    """One pass over `windows` in an order shuffled by `rng`, `batch_size` at a time, as
    `LazyBatches` (see there for the items)."""
    return LazyBatches(windows, batch_order(len(windows), batch_size, rng), with_labels)
