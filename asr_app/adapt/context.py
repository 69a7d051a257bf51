"""What the stages of one adaptation share: the `Context` (teacher, model, data, statistics,
method blocks, the new tokenizer after a vocabulary change, the report being filled)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from asr_app.adapt.data import LazyBatches, Window, evenly
from asr_app.adapt.options import AdaptOptions
from asr_app.adapt.report import AdaptReport
from asr_app.adapt.state import RunState, save_tensors


class Context:
    """What the stages of one run share (methods' stages read and set these).

    Attributes:
        options: AdaptOptions; profile: the enrollment `Profile`; folder: the run folder;
        bundle: the base model's bundle; teacher: the original model (frozen);
        model: the model being compressed (set by the first method stage, else a copy of
            the teacher); blocks: the method blocks saved in config.json, in order;
        speaker, replay, perturbed: training windows; data: what the data stage found;
        stats, gains: activation statistics and sensitivities (None when not measured);
        device: where training runs; report: the AdaptReport being filled;
        transcripts: the training takes' texts, prompt_texts: the enrollment prompts,
        unlabeled_texts: the teacher's transcripts of `--unlabeled` audio (a tokenizer's
        corpus); tokenizer: the compressed model's tokenizer when a method
        changed the vocabulary (`set_vocabulary`), else None (the base model's).
    """

    def __init__(self, profile, options: AdaptOptions, folder: Path, state: RunState, on_event: Callable):
        self.profile, self.options, self.folder, self.state = profile, options, folder, state
        self.event = on_event
        self.device = options.device
        self.report = AdaptReport(profile=str(profile.path), options=options.to_flat())
        self.bundle: Any = None  # WhisperBundle
        self.teacher: Any = None  # WhisperForConditionalGeneration
        self.model: Any = None
        self.blocks: list[dict] = []
        self.speaker: list[Window] = []
        self.replay: list[Window] = []
        self.perturbed: list[Window] = []
        self.data: dict = {}
        self.trained_takes: list[str] = []  # audio paths (relative to the profile) of the training takes
        self.stats: Any = None  # ActivationStats
        self.gains: Any = None  # list of per-layer sensitivities
        self.model_dir: Path | None = None
        self.transcripts: list[str] = []
        self.prompt_texts: list[str] = []
        self.unlabeled_texts: list[str] = []
        self.tokenizer: Any = None
        self._budget_end = time.monotonic() + 60 * (options.time_budget_min or 0)

    def set_vocabulary(self, tokenizer, relabel: Callable[[list[int]], list[int]]) -> None:
        """A method moved the model to a new vocabulary: `tokenizer` is saved with it and
        every training window's labels are rewritten by `relabel` (labels in the base
        vocabulary -> the same text in the new one)."""
        self.tokenizer = tokenizer
        for w in self.speaker + self.replay + self.perturbed:
            w.labels = relabel(w.labels)

    @property
    def vocabulary_changed(self) -> bool:
        """Whether the compressed model has another vocabulary than the teacher (logit
        distillation toward the teacher is then off: their logits are not comparable)."""
        return self.tokenizer is not None

    def batches(self, windows: list[Window], rng: random.Random, steps: int = 0) -> LazyBatches:
        """Shuffled (log-mel, labels) batches of `options.batch_size` windows, stacked when
        read (`LazyBatches`): one pass, or as many passes (each shuffled anew) as give at
        least `steps` batches."""
        from asr_app.adapt.data import batch_order

        chunks: list[list[int]] = []
        while windows and (not chunks or len(chunks) < steps):
            chunks += batch_order(len(windows), self.options.batch_size, rng)
        return LazyBatches(windows, chunks, with_labels=True)

    def compressed_bundle(self, model):
        """The base bundle with `model` and, after a vocabulary change, its tokenizer."""
        if self.tokenizer is None:
            return replace(self.bundle, model=model)
        from asr_app.models.bundle import special_tokens_of

        return replace(
            self.bundle,
            model=model,
            tokenizer=self.tokenizer,
            special=special_tokens_of(self.tokenizer),
            multilingual=bool(self.bundle.is_multilingual),
        )

    def done(self, stage: str) -> dict | None:
        """The saved result of a finished stage, or None."""
        return self.state.done(stage)

    def finish(self, stage: str, result: dict) -> None:
        """Save a stage's result in the run state."""
        self.state.finish(stage, result)

    def stage_deadline(self, share: float) -> float | None:
        """time.monotonic() at which a training stage given `share` of the time left stops."""
        if self.options.time_budget_min is None:
            return None
        return time.monotonic() + max(0.0, (self._budget_end - time.monotonic()) * share)

    def activation_stats(self, model, heads: bool = False):
        """`model`'s encoder activation statistics on the calibration windows (the speaker's,
        and the replay share), as the calibrate stage measures the original's; for a
        progressive cut, measured on the model recovered so far."""
        from asr_app.adapt.calibration import calibration_mels
        from asr_app.compression.calibrate import collect_activation_stats

        mels = calibration_mels(self)
        return collect_activation_stats(
            model, mels, lambda b: self.event("progress", ("calibrate", b + 1, len(mels))), heads=heads
        )

    def recover(self, key: str, model):
        """Layer-wise distillation of `model` toward the original, as the layerwise stage
        (`asr_app.adapt.recovery`), resumable under the stage name `key`; returns the model."""
        from asr_app.adapt.recovery import train_stage

        return train_stage(self, key, model, kind="layerwise")

    def decoder_stats(self, attention: bool = False):
        """Second moments of the decoder fc inputs (and with `attention`, its attention inputs)
        on the speaker's calibration windows, teacher-forced on their transcripts (saved, so a
        resumed run factors the same)."""
        import torch
        from safetensors.torch import load_file

        from asr_app.compression.calibrate import DecoderStats, collect_decoder_stats

        path = self.folder / "decoder_stats.safetensors"
        if path.is_file():
            stats = DecoderStats.from_state_dict(load_file(str(path)))
            if stats.self_in is not None or not attention:
                return stats
        windows = evenly(self.speaker, self.options.calibration_windows)
        batches = [(torch.from_numpy(w.mel[None]), torch.tensor([w.labels])) for w in windows]
        stats = collect_decoder_stats(
            self.teacher,
            batches,
            lambda b: self.event("progress", ("factor", b + 1, len(batches))),
            attention=attention,
        )
        save_tensors(stats.state_dict(), path)
        return stats
