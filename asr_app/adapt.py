"""`asr-app adapt`: compress and adapt Whisper to one speaker's enrollment profile.

Stages (each checkpointed in `<profile>/adapt/<run>/`, so an interrupted run resumes at the
stage, and inside training stages at the last saved step, where it stopped):

1. data       pack the profile's training takes into 30-second windows with timestamped
              targets (replay sets too); held-out takes are never trained on
2. calibrate  activation second moments and site sensitivities on the speaker's windows
3. factor     rank allocation under the parameter budget, then AdaPTwin surgery
4. layerwise  LoRA on the factors, layer-wise distillation toward the original on the
              speaker and replay windows, merge
5. finetune   LoRA again, end-to-end on speaker + replay windows (+ teacher KL), merge
6. control    the original model with the same LoRA fine-tuning only (comparison)
7. evaluate   WER of original, control and compressed on the held-out takes and a
              general set; the report is printed and saved as JSON
The compressed model is saved in `<profile>/models/<run>/` and listed in profile.json, so
`--profile NAME` loads it in transcribe, eval, bench and --live.
Method: AdaPTwin (Biju, Sriram, Pilanci 2024); see compression/adaptwin/README.md.
"""

from __future__ import annotations

import copy
import json
import random
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from asr_app.audio import N_SAMPLES, SAMPLE_RATE_HZ, load_audio, log_mel_window
from asr_app.errors import AsrAppError

STAGES = ("data", "calibrate", "factor", "layerwise", "finetune", "control", "evaluate")
TIMESTAMP_S = 0.02  # Whisper's timestamp token resolution
WINDOW_FILL_S = 29.0  # pack takes up to this length, leaving room before the 30 s edge
PROFILE_LANGUAGE = "en"  # enrollment prompts and imported sets are English
WER_LOSS_LIMIT = 2.0  # WER points (absolute) a compressed model may lose before adapt advises a larger ratio


class AdaptError(AsrAppError):
    """Adaptation cannot run (no profile data, bad options)."""


@dataclass(frozen=True)
class AdaptOptions:
    """Options of one adaptation run.

    Attributes:
        base: base model (built-in name, folder or hub id).
        target_ratio: encoder parameters kept / original (0.55 removes 45%).
        allocation: "sensitivity" (data-aware ranks per layer and head) or "uniform".
        data_aware: whitened factorization with the speaker's activation statistics.
        mode: "joint" (product twins) or "separate" (Q and K truncated apart; ablation).
        ffn: also factor fc1/fc2 (needed past about 30% of the encoder).
        ffn_method: how the feed-forward blocks shrink: "lowrank" (fc1 and fc2 as
            speaker-whitened low-rank pairs, the default) or "prune" (each block keeps the hidden
            neurons its low-rank ranks would pay for, chosen on the speaker's activations,
            fc2 refit by least squares; `compression/adaptwin/prune.py`).
        decoder_keep: also factor the decoder's fc1/fc2, keeping about this share of their
            parameters (speaker-whitened when data_aware, one rank for all), or None
            (default: the decoder stays dense).
        decoder_attention_rank: also factor every decoder self- and cross-attention at this
            per-head rank (1..head_dim; its KV cache shrinks to rank-wide keys and values), or
            None (default: dense). The token embedding always stays dense.
        lora_rank: LoRA rank in both training stages.
        finetune_lora: where fine-tuning (and the control) puts its LoRA adapters:
            "decoder" (default: every decoder attention and feed-forward linear; the
            encoder stays as layer-wise distillation left it), "encoder" (the factored
            layers; the default before) or "both".
        layerwise_epochs, finetune_epochs: passes over the speaker's windows.
        batch_size: windows per optimizer step.
        layerwise_lr, finetune_lr: peak learning rates.
        kd_weight: weight of the KL term toward the original model in fine-tuning.
        layerwise_teacher_input: weight of layer-wise distillation's term that feeds each
            layer the original model's input to it, beside the term that feeds the layer's
            own compressed predecessors' output (0: that term only; see `layerwise_distill`).
        layerwise_vtlp: layer-wise distillation warps each window's log-mel in frequency by a
            random factor in [1 - v, 1 + v] (vocal tract length perturbation, applied to teacher
            and student alike; 0 = off; see `train.warp_mel`).
        replay: dataset folders or manifests of other voices mixed into fine-tuning.
        replay_ratio: replay windows per speaker window (at most what the sets hold).
        stages: which recovery stages run ("layerwise", "finetune"); ablations drop some.
        control: also fine-tune the original with LoRA only, for comparison.
        general_set, general_limit: general (other speakers) evaluation set and its size.
        speaker_set, speaker_filter: more recordings of the same speaker to evaluate on
            (beyond the profile's held-out takes), e.g. another book read by them.
        time_budget_min: wall-clock budget for the training stages, or None (epochs only).
        device: "cpu" or "cuda"; threads: CPU threads; seed: for shuffling and noise.
        checkpoint_every: optimizer steps between resumable checkpoints.
        varied_windows: fill training windows to random lengths (see `pack_windows`), not
            always to 29 s.
        speed_perturb: speeds of extra, resampled copies of the speaker's and replay takes
            used in training (speed perturbation: tempo and pitch move together, so each
            copy sounds like a voice with another vocal-tract length). The number of
            optimizer steps stays `*_epochs` over the unperturbed windows: the copies make
            each step's data more varied, not the run longer. () turns it off.
        calibration_windows: at most this many 30-second windows (evenly spaced over the
            enrollment) for activation statistics; 64 windows = 32 minutes.
        calibration_replay_share: share of those windows taken from the replay sets, so
            the whitening also weighs directions other voices use (0 = the speaker only).
    """

    base: str = "tiny.en"
    target_ratio: float = 0.55
    allocation: str = "sensitivity"
    data_aware: bool = True
    mode: str = "joint"
    ffn: bool = True
    ffn_method: str = "lowrank"
    decoder_keep: float | None = None
    decoder_attention_rank: int | None = None
    lora_rank: int = 64
    finetune_lora: str = "decoder"
    layerwise_epochs: float = 2.0
    finetune_epochs: float = 2.0
    batch_size: int = 2
    layerwise_lr: float = 2e-3
    finetune_lr: float = 5e-4
    kd_weight: float = 0.5
    layerwise_teacher_input: float = 1.0
    layerwise_vtlp: float = 0.0
    replay: tuple[str, ...] = ()
    replay_ratio: float = 1.0
    stages: tuple[str, ...] = ("layerwise", "finetune")
    control: bool = True
    general_set: str | None = None
    general_limit: int | None = None
    speaker_set: str | None = None
    speaker_filter: str | None = None
    time_budget_min: float | None = None
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    checkpoint_every: int = 25
    calibration_windows: int = 64
    calibration_replay_share: float = 0.0
    varied_windows: bool = True
    speed_perturb: tuple[float, ...] = (0.9, 1.1)

    def __post_init__(self):
        if not 0 < self.target_ratio <= 1:
            raise ValueError(f"target_ratio must be in (0, 1], got {self.target_ratio}")
        if self.allocation not in ("sensitivity", "uniform"):
            raise ValueError(f"allocation must be 'sensitivity' or 'uniform', got {self.allocation!r}")
        if self.mode not in ("joint", "separate"):
            raise ValueError(f"mode must be 'joint' or 'separate', got {self.mode!r}")
        if self.ffn_method not in ("lowrank", "prune"):
            raise ValueError(f"ffn_method must be 'lowrank' or 'prune', got {self.ffn_method!r}")
        if self.mode == "separate" and (self.data_aware or self.allocation != "uniform"):
            raise ValueError("mode 'separate' is the plain baseline: use it with allocation 'uniform', data_aware off")
        if self.allocation == "sensitivity" and not self.data_aware:
            raise ValueError("allocation 'sensitivity' needs data_aware (it weighs whitened singular values)")
        if set(self.stages) - {"layerwise", "finetune"}:
            raise ValueError(f"stages must be among layerwise, finetune; got {self.stages}")
        if not 0 <= self.calibration_replay_share < 1:
            raise ValueError(f"calibration_replay_share must be in [0, 1), got {self.calibration_replay_share}")
        if any(not 0.5 <= sp <= 2.0 or sp == 1.0 for sp in self.speed_perturb):
            raise ValueError(f"speed_perturb speeds must be in [0.5, 2] and not 1 (e.g. 0.9 1.1; none turns it off), "
                             f"got {self.speed_perturb}")
        if self.layerwise_teacher_input < 0:
            raise ValueError(f"layerwise_teacher_input must be >= 0, got {self.layerwise_teacher_input}")
        if not 0 <= self.layerwise_vtlp < 0.5:
            raise ValueError(f"layerwise_vtlp must be in [0, 0.5) (e.g. 0.1), got {self.layerwise_vtlp}")
        if self.decoder_keep is not None and not 0 < self.decoder_keep < 1:
            raise ValueError(f"decoder_keep must be in (0, 1) or None, got {self.decoder_keep}")
        if self.decoder_attention_rank is not None and self.decoder_attention_rank < 1:
            raise ValueError(f"decoder_attention_rank must be >= 1 (e.g. 32 of 64), got {self.decoder_attention_rank}")
        if self.finetune_lora not in ("encoder", "decoder", "both"):
            raise ValueError(f"finetune_lora must be 'encoder', 'decoder' or 'both', got {self.finetune_lora!r}")
        if self.batch_size < 1 or self.lora_rank < 1:
            raise ValueError("batch_size and lora_rank must be >= 1")

    def run_name(self) -> str:
        """Folder name of this run: base, ratio and what differs from the defaults."""
        base = re.sub(r"[^A-Za-z0-9.]+", "_", Path(self.base).name or self.base)
        name = f"{base}-keep{self.target_ratio:g}"
        if self.allocation != "sensitivity":
            name += f"-{self.allocation}"
        if not self.data_aware:
            name += "-plain"
        if self.mode != "joint":
            name += f"-{self.mode}"
        if not self.ffn:
            name += "-attnonly"
        elif self.ffn_method != "lowrank":
            name += f"-ffn{self.ffn_method}"
        if self.decoder_keep is not None:
            name += f"-dec{self.decoder_keep:g}"
        if self.decoder_attention_rank is not None:
            name += f"-decattn{self.decoder_attention_rank}"
        if not self.varied_windows:
            name += "-fullwin"
        if self.calibration_replay_share:
            name += f"-calmix{self.calibration_replay_share:g}"
        default = AdaptOptions.__dataclass_fields__
        if (self.layerwise_epochs, self.finetune_epochs) != (default["layerwise_epochs"].default,
                                                             default["finetune_epochs"].default):
            name += f"-ep{self.layerwise_epochs:g}+{self.finetune_epochs:g}"
        if self.kd_weight != default["kd_weight"].default:
            name += f"-kd{self.kd_weight:g}"
        if self.layerwise_teacher_input != default["layerwise_teacher_input"].default:
            name += f"-lwti{self.layerwise_teacher_input:g}"
        if self.layerwise_vtlp != default["layerwise_vtlp"].default:
            name += f"-vtlp{self.layerwise_vtlp:g}"
        if self.finetune_lora != default["finetune_lora"].default:
            name += f"-ft{self.finetune_lora}"
        if tuple(self.speed_perturb) != default["speed_perturb"].default:
            name += "-sp" + ("_".join(f"{sp:g}" for sp in self.speed_perturb) or "off")
        if tuple(self.stages) != ("layerwise", "finetune"):
            name += "-" + ("+".join(self.stages) or "twinsonly")
        return name


@dataclass
class Window:
    """Up to 30 s of packed takes: (n_mels, 3000) log-mel and decoder labels."""

    mel: np.ndarray
    labels: list[int]
    audio_s: float


@dataclass
class AdaptReport:
    """What `run_adapt` measured (saved as report.json)."""

    profile: str
    options: dict
    model_dir: str | None = None
    params: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    wer: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def wer_increase(self) -> dict[str, float]:
        """WER points (absolute, %) the compressed model loses against the original, per evaluated
        set ("heldout", "speaker", "general"); negative where it is better. Sets without both
        figures are left out."""
        return {name: round(row["compressed"] - row["original"], 2) for name, row in self.wer.items()
                if "compressed" in row and "original" in row}

    def advice(self, limit: float = WER_LOSS_LIMIT) -> str | None:
        """One line for the user when the compressed model loses more than `limit` WER points
        on some set, naming the sets and what to try; None otherwise."""
        worse = {k: v for k, v in self.wer_increase().items() if v > limit}
        if not worse:
            return None
        ratio = self.options.get("target_ratio")
        lost = ", ".join(f"{v:.2f} points on {k}" for k, v in worse.items())
        return (f"the compressed model loses more than {limit:g} WER points against the original ({lost}); "
                f"keep more of the encoder with a larger --target-ratio than {ratio} (at 0.85 tiny.en stayed within "
                "1.2 points and base within 2.9 on our test speakers; README, Results) or give more enrollment "
                "and --replay audio")


# -- data ------------------------------------------------------------------------------------
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
    return librosa.resample(signal, orig_sr=SAMPLE_RATE_HZ, target_sr=int(round(SAMPLE_RATE_HZ / speed))).astype(np.float32)


def pack_windows(utterances, bundle, on_progress: Callable[[int], None] | None = None,
                 rng: random.Random | None = None, speed: float = 1.0) -> list[Window]:
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
    Returns:
        Windows; utterances longer than a window or unreadable are skipped.
    """
    sp, tok = bundle.special, bundle.tokenizer
    prefix = [sp.languages[PROFILE_LANGUAGE], sp.transcribe] if bundle.is_multilingual else []
    max_ts = sp.timestamp_begin + 1500

    def ts(t_s: float) -> int:
        return min(sp.timestamp_begin + int(round(t_s / TIMESTAMP_S)), max_ts)

    windows, audio, tokens, offset = [], [], [], 0.0
    capacity = [rng.uniform(0, WINDOW_FILL_S) if rng else WINDOW_FILL_S]

    def flush():
        nonlocal audio, tokens, offset
        capacity[0] = rng.uniform(0, WINDOW_FILL_S) if rng else WINDOW_FILL_S
        if audio:
            signal = np.concatenate(audio)[:N_SAMPLES]
            windows.append(Window(log_mel_window(bundle.feature_extractor, signal), prefix + tokens + [sp.eot],
                                  len(signal) / SAMPLE_RATE_HZ))
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


def _evenly(items: list, n: int) -> list:
    """At most `n` items spread evenly over `items` (all of them when there are fewer)."""
    if n <= 0 or not items:
        return []
    step = max(1.0, len(items) / n)
    return [items[int(i * step)] for i in range(min(len(items), n))]


def _batches(windows: list[Window], batch_size: int, rng: random.Random, with_labels: bool):
    import torch

    order = list(range(len(windows)))
    rng.shuffle(order)
    out = []
    for i in range(0, len(order), batch_size):
        chunk = [windows[j] for j in order[i:i + batch_size]]
        mel = torch.from_numpy(np.stack([w.mel for w in chunk]))
        if not with_labels:
            out.append(mel)
            continue
        width = max(len(w.labels) for w in chunk)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for k, w in enumerate(chunk):
            labels[k, :len(w.labels)] = torch.tensor(w.labels)
        out.append((mel, labels))
    return out


# -- state -----------------------------------------------------------------------------------
_BEFORE_OPTION = {"finetune_lora": "encoder"}  # options whose default differs from the behaviour before them


class _RunState:
    """state.json of a run folder: finished stages and their results (written atomically)."""

    def __init__(self, folder: Path, options: AdaptOptions):
        from asr_app.outputs import atomic_write_text

        self.folder, self._write = folder, atomic_write_text
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "state.json"
        new = json.loads(json.dumps(asdict(options)))
        self.data = json.loads(path.read_text()) if path.is_file() else {"options": new, "stages": {}}
        # an option added after this run started: the run used what the code did before it
        old = {**json.loads(json.dumps(asdict(AdaptOptions()))), **_BEFORE_OPTION, **self.data["options"]}
        # the evaluation set and time budget may change between resumes; training options may not
        loose = ("general_set", "general_limit", "speaker_set", "speaker_filter", "time_budget_min", "threads", "control", "device", "checkpoint_every")
        if {k: v for k, v in old.items() if k not in loose} != {k: v for k, v in new.items() if k not in loose}:
            raise AdaptError(f"{folder} holds a run with other options; delete it to start over")
        self.data["options"] = new

    def done(self, stage: str) -> dict | None:
        return self.data["stages"].get(stage)

    def finish(self, stage: str, result: dict) -> None:
        self.data["stages"][stage] = result
        self.save()

    def save(self) -> None:
        self._write(self.folder / "state.json", json.dumps(self.data, indent=2))


def _save_tensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)


def _optimizer_to_tensors(state: dict) -> tuple[dict, dict]:
    """AdamW state_dict -> (tensors for safetensors, JSON-able rest)."""
    import torch

    tensors, meta = {}, {"param_groups": state["param_groups"], "keys": {}}
    for idx, entry in state["state"].items():
        meta["keys"][str(idx)] = list(entry)
        for name, value in entry.items():
            tensors[f"{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, meta


def _optimizer_from_tensors(tensors: dict, meta: dict) -> dict:
    state = {int(idx): {name: tensors[f"{idx}.{name}"] for name in names} for idx, names in meta["keys"].items()}
    return {"state": state, "param_groups": meta["param_groups"]}


# -- the run ---------------------------------------------------------------------------------
class Adapter:
    """Runs the stages of one adaptation (see module docstring).

    Args:
        profile: an `enroll.profile.Profile`.
        options: AdaptOptions.
        on_event: callback(kind, payload) for progress: ("stage", name), ("progress",
            (stage, done, total)), ("info", text).
    Raises:
        AdaptError: no training takes, a run folder with other options.
    """

    def __init__(self, profile, options: AdaptOptions, on_event: Callable | None = None):
        self.profile, self.options = profile, options
        self.on_event = on_event or (lambda kind, payload: None)
        self.folder = profile.path / "adapt" / options.run_name()
        self.state = _RunState(self.folder, options)
        self.report = AdaptReport(profile=str(profile.path), options=asdict(options))

    # -- helpers --------------------------------------------------------------------------
    def _event(self, kind, payload):
        self.on_event(kind, payload)

    def _load_base(self):
        from asr_app.models import load_model

        return load_model(self.options.base, self.options.device)

    def _stage_deadline(self, share: float) -> float | None:
        if self.options.time_budget_min is None:
            return None
        remaining = self._budget_end - time.monotonic()
        return time.monotonic() + max(0.0, remaining * share)

    # -- stages ---------------------------------------------------------------------------
    def run(self) -> AdaptReport:
        """Run (or resume) every stage in order; returns the report, also saved in the run folder."""
        import torch

        opts = self.options
        if opts.threads:
            torch.set_num_threads(opts.threads)
        torch.manual_seed(opts.seed)
        t_start = time.monotonic()
        self._budget_end = t_start + 60 * (opts.time_budget_min or 0)
        bundle = self._load_base()
        teacher = bundle.model
        for p in teacher.parameters():
            p.requires_grad_(False)
        head_dim = teacher.config.d_model // teacher.config.decoder_attention_heads
        if opts.decoder_attention_rank is not None and opts.decoder_attention_rank > head_dim:
            raise AdaptError(f"--decoder-attention-rank {opts.decoder_attention_rank} is above {opts.base}'s "
                             f"head_dim {head_dim}: choose 1..{head_dim}")

        speaker, replay, perturbed, data = self._prepare_data(bundle)  # 1 data
        # 2 calibrate
        stats, gains = self._calibrate(teacher, speaker, replay)
        # 3 factor
        model, plan = self._factor(teacher, stats, gains, speaker)
        # 4 layerwise
        if "layerwise" in opts.stages:
            model = self._train_stage("layerwise", model, teacher, speaker, replay, perturbed)
        # 5 finetune
        if "finetune" in opts.stages:
            model = self._train_stage("finetune", model, teacher, speaker, replay, perturbed)
        model_dir = self._save_final(model, plan, bundle, data)
        # 6 control
        control = None
        if opts.control:
            control = self._train_stage("control", copy.deepcopy(teacher), teacher, speaker, replay, perturbed)
        self.report.stages["adapt_total"] = {"wall_s": round(time.monotonic() - t_start, 1)}
        # 7 evaluate
        self._evaluate(bundle, {"original": teacher, "lora_control": control, "compressed": model})
        self.report.model_dir = str(model_dir)
        self.report.stages["total"] = {"wall_s": round(time.monotonic() - t_start, 1)}
        from asr_app.outputs import atomic_write_text

        atomic_write_text(self.folder / "report.json", json.dumps(self.report.to_dict(), indent=2))
        atomic_write_text(model_dir / "report.json", json.dumps(self.report.to_dict(), indent=2))
        return self.report

    def _prepare_data(self, bundle):
        """Pack the training takes and the replay sets into windows, plus their speed-perturbed
        copies; returns (speaker, replay, perturbed, data)."""
        from asr_app.datasets import load_dataset

        opts = self.options
        t0 = time.monotonic()
        self._event("stage", "data")
        manifest = self.profile.path / "manifest.jsonl"
        train = load_dataset(manifest, split="train") if manifest.exists() else []
        if not train:
            raise AdaptError(f"profile {self.profile.path.name} has no training takes: record some with "
                             f"`asr-app enroll --profile {self.profile.path.name}`")
        replay_utts = [u for src in opts.replay for u in load_dataset(src)]
        random.Random(opts.seed).shuffle(replay_utts)
        speeds = (1.0, *opts.speed_perturb)
        total_utts = len(train) * len(speeds)

        def pack(utts, source: str, speed: float, done: int = 0):
            rng = random.Random(f"{opts.seed}-{source}" + (f"-{speed:g}" if speed != 1.0 else "")) if opts.varied_windows else None
            progress = (lambda n: self._event("progress", ("data", done + n + 1, total_utts))) if source == "speaker" else None
            return pack_windows(utts, bundle, progress, rng, speed)

        speaker = pack(train, "speaker", 1.0)
        want_s = opts.replay_ratio * sum(w.audio_s for w in speaker)
        picked, total = [], 0.0
        for u in replay_utts:
            if total >= want_s:
                break
            picked.append(u)
            total += u.duration_s or 10.0  # LJSpeech does not say; the packer measures exactly
        replay = pack(picked, "replay", 1.0)
        perturbed = []
        for k, speed in enumerate(opts.speed_perturb, start=1):
            perturbed += pack(train, "speaker", speed, k * len(train)) + pack(picked, "replay", speed)
        data = {"speaker_takes": len(train), "speaker_windows": len(speaker),
                "speaker_minutes": round(sum(w.audio_s for w in speaker) / 60, 2),
                "replay_sets": list(opts.replay), "replay_windows": len(replay),
                "replay_minutes": round(sum(w.audio_s for w in replay) / 60, 2),
                "speed_perturb": list(opts.speed_perturb), "perturbed_windows": len(perturbed),
                "heldout_takes": len(self.profile.takes("heldout"))}
        self.report.data = data
        self.report.stages["data"] = {"wall_s": round(time.monotonic() - t0, 1)}
        return speaker, replay, perturbed, data

    def _calibrate(self, teacher, speaker, replay):
        import torch
        from safetensors.torch import load_file

        from asr_app.compression.adaptwin.calibrate import (ActivationStats, collect_activation_stats,
                                                            measure_sensitivity)

        if not self.options.data_aware:
            return None, None
        path = self.folder / "stats.safetensors"
        done = self.state.done("calibrate")
        self._event("stage", "calibrate")
        if done and path.is_file():
            self.report.stages["calibrate"] = done
            return ActivationStats.from_state_dict(load_file(str(path))), done["gains"]
        t0 = time.monotonic()
        n_replay = round(self.options.calibration_windows * self.options.calibration_replay_share) if replay else 0
        mels = [torch.from_numpy(w.mel[None]) for w in _evenly(speaker, self.options.calibration_windows - n_replay)]
        probe = torch.cat(mels[: min(2, len(mels))])  # sensitivity is measured on the speaker
        mels += [torch.from_numpy(w.mel[None]) for w in _evenly(replay, n_replay)]
        stats = collect_activation_stats(teacher, mels, lambda b: self._event("progress", ("calibrate", b + 1, len(mels))))
        gains = measure_sensitivity(teacher, probe, seed=self.options.seed)
        _save_tensors(stats.state_dict(), path)
        result = {"wall_s": round(time.monotonic() - t0, 1), "positions": stats.positions, "gains": gains}
        self.state.finish("calibrate", result)
        self.report.stages["calibrate"] = result
        return stats, gains

    def _decoder_stats(self, teacher, speaker, attention: bool = False):
        """Second moments of the decoder fc inputs (and with `attention`, its attention inputs)
        on the speaker's calibration windows, teacher-forced on their transcripts (saved, so a
        resumed run factors the same)."""
        import torch
        from safetensors.torch import load_file

        from asr_app.compression.adaptwin.calibrate import DecoderStats, collect_decoder_stats

        path = self.folder / "decoder_stats.safetensors"
        if path.is_file():
            stats = DecoderStats.from_state_dict(load_file(str(path)))
            if stats.self_in is not None or not attention:
                return stats
        windows = _evenly(speaker, self.options.calibration_windows)
        batches = [(torch.from_numpy(w.mel[None]), torch.tensor([w.labels])) for w in windows]
        stats = collect_decoder_stats(teacher, batches,
                                      lambda b: self._event("progress", ("factor", b + 1, len(batches))),
                                      attention=attention)
        _save_tensors(stats.state_dict(), path)
        return stats

    def _factor(self, teacher, stats, gains, speaker):
        from asr_app.compression.adaptwin.allocate import allocate_ranks, pruned_plan, uniform_plan
        from asr_app.compression.adaptwin.apply import (compress_decoder_attention, compress_decoder_ffn,
                                                        compress_encoder, decoder_ffn_plan)
        from asr_app.compression.adaptwin.config import CompressionPlan

        opts = self.options
        self._event("stage", "factor")
        done = self.state.done("factor")
        t0 = time.monotonic()
        # factors are computed on a CPU copy (statistics live on the CPU), then moved
        model = copy.deepcopy(teacher).cpu()
        if done:
            plan = CompressionPlan.from_dict(done["plan"])
        elif opts.allocation == "sensitivity":
            plan = allocate_ranks(model, opts.target_ratio, stats, gains, attention=True, ffn=opts.ffn)
        else:
            plan = uniform_plan(model, opts.target_ratio, attention=True, ffn=opts.ffn, mode=opts.mode)
            plan.data_aware = opts.data_aware
        if opts.ffn_method == "prune" and not done:
            plan = pruned_plan(model, plan)
        if opts.decoder_keep is not None and not done:
            plan.decoder = decoder_ffn_plan(model, opts.decoder_keep)
        if opts.decoder_attention_rank is not None and not done:
            plan.decoder_attention = opts.decoder_attention_rank
        counts = compress_encoder(model, plan, stats)
        if plan.decoder or plan.decoder_attention is not None:
            attention = plan.decoder_attention is not None
            decoder_stats = self._decoder_stats(teacher, speaker, attention) if plan.data_aware else None
            if plan.decoder:
                counts["after"] = compress_decoder_ffn(model, plan, decoder_stats)["after"]
            if attention:
                counts["after"] = compress_decoder_attention(model, plan, decoder_stats)["after"]
        model.to(opts.device)
        before, after = counts["before"], counts["after"]
        self.report.params = {"original": before, "compressed": after,
                              "removed_share": {k: round(1 - after[k] / before[k], 4) for k in before}}
        self.report.plan = plan.to_dict()
        result = {"wall_s": round(time.monotonic() - t0, 1) if not done else done["wall_s"], "plan": plan.to_dict()}
        if not done:
            self.state.finish("factor", result)
        self.report.stages["factor"] = {"wall_s": result["wall_s"]}
        for p in model.parameters():
            p.requires_grad_(False)
        return model, plan

    def _train_stage(self, stage: str, model, teacher, speaker, replay, perturbed):
        """LoRA + one training loop + merge, resumable from its checkpoints.

        Batches are shuffled by a generator seeded per stage, so a resumed stage sees the
        same batch order as an uninterrupted one and skips the steps already taken."""
        from safetensors import safe_open

        from asr_app.compression.adaptwin.train import (TrainConfig, add_lora, finetune, layerwise_distill,
                                                        lora_targets, merge_lora)

        opts = self.options
        self._event("stage", stage)
        final = self.folder / f"{stage}.safetensors"
        done = self.state.done(stage)
        if done and final.is_file():
            from safetensors.torch import load_model

            load_model(model, str(final), strict=True)
            self.report.stages[stage] = done
            return model
        t0 = time.monotonic()
        layerwise = stage == "layerwise"
        windows = speaker + replay  # layer-wise needs no labels: other voices add diversity
        epochs = opts.layerwise_epochs if layerwise else opts.finetune_epochs
        steps = max(1, int(round(epochs * len(windows) / opts.batch_size)))
        # steps count passes over the unperturbed windows; batches come from the whole pool
        pool = windows + perturbed
        rng = random.Random(f"{opts.seed}-{stage}")
        batches = []
        while len(batches) < steps:
            batches += _batches(pool, opts.batch_size, rng, with_labels=not layerwise)
        share = {"layerwise": 0.25, "finetune": 0.6, "control": 1.0}[stage]
        cfg = TrainConfig(steps=steps, lr=opts.layerwise_lr if layerwise else opts.finetune_lr,
                          kd_weight=opts.kd_weight, teacher_input_weight=opts.layerwise_teacher_input,
                          vtlp=opts.layerwise_vtlp,
                          deadline_s=self._stage_deadline(share),
                          checkpoint_every=opts.checkpoint_every)
        if layerwise:
            part = "encoder"
        elif opts.finetune_lora == "encoder" and (opts.decoder_keep is not None or opts.decoder_attention_rank is not None):
            part = "both"  # the decoder's factors are recovered in fine-tuning only
        else:
            part = opts.finetune_lora
        peft_model = add_lora(model, opts.lora_rank, targets=lora_targets(part))
        ckpt = self.folder / f"{stage}.ckpt.safetensors"
        opt_state, start = None, 0
        if ckpt.is_file():
            with safe_open(str(ckpt), "pt") as f:
                meta = f.metadata()
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            lora = {k[5:]: v for k, v in tensors.items() if k.startswith("lora.")}
            peft_model.load_state_dict(lora, strict=False)
            opt_state = _optimizer_from_tensors({k[4:]: v for k, v in tensors.items() if k.startswith("opt.")},
                                                json.loads(meta["optimizer"]))
            start = int(meta["step"])
            self._event("info", f"{stage}: resuming at step {start} of {steps}")

        def on_checkpoint(step, optimizer_state):
            # one file: adapter weights, optimizer state and the step can never disagree
            lora = {f"lora.{k}": v for k, v in peft_model.state_dict().items() if "lora_" in k}
            opt_t, opt_meta = _optimizer_to_tensors(optimizer_state)
            _save_tensors({**lora, **{f"opt.{k}": v for k, v in opt_t.items()}}, ckpt,
                          {"step": str(step), "optimizer": json.dumps(opt_meta)})

        on_step = lambda step, loss: self._event("progress", (stage, step, steps, loss))  # noqa: E731
        if layerwise:
            result = layerwise_distill(peft_model, teacher, batches, cfg, opt_state, start, on_step, on_checkpoint)
        else:
            result = finetune(peft_model, batches, cfg, teacher if opts.kd_weight > 0 else None, opt_state, start,
                              on_step, on_checkpoint)
        model = merge_lora(peft_model)
        for p in model.parameters():
            p.requires_grad_(False)
        self._save_state(model, final)
        result = {"wall_s": round(time.monotonic() - t0, 1), "planned_steps": steps, **result}
        self.state.finish(stage, result)
        ckpt.unlink(missing_ok=True)
        self.report.stages[stage] = result
        return model

    @staticmethod
    def _save_state(model, path: Path) -> None:
        from safetensors.torch import save_model

        tmp = path.with_suffix(".tmp")
        save_model(model, str(tmp))
        tmp.replace(path)

    def _save_final(self, model, plan, bundle, data) -> Path:
        from asr_app.compression.adaptwin.checkpoint import save_compressed

        name = self.options.run_name()
        folder = self.profile.path / "models" / name
        # trained with the <|en|> <|transcribe|> prefix: transcribe decodes in that language
        # unless told otherwise (language detection on a compressed encoder is not trained)
        meta = {"base_model": self.options.base, "language": PROFILE_LANGUAGE, "target_ratio": self.options.target_ratio,
                "options": json.loads(json.dumps(asdict(self.options))), "data": data,
                "params": self.report.params, "created": time.time()}
        save_compressed(model, folder, plan, meta)
        bundle.tokenizer.save_pretrained(str(folder))
        bundle.feature_extractor.save_pretrained(str(folder))
        models = [m for m in self.profile.meta().get("models", []) if m.get("name") != name]
        models.append({"name": name, "path": f"models/{name}", "base": self.options.base, "method": "adaptwin",
                       "encoder_removed": self.report.params["removed_share"]["encoder"], "created": time.time()})
        self.profile.update_meta(models=models)
        return folder

    def _evaluate(self, bundle, models: dict) -> None:
        from asr_app.datasets import load_dataset
        from asr_app.evaluate import evaluate
        from asr_app.outputs import atomic_write_text
        from asr_app.decoding import DecodingOptions
        from asr_app.transcribe import TranscribeOptions, Transcriber

        opts = self.options
        self._event("stage", "evaluate")
        # every model decodes in the profile's language: a multilingual original left to detect
        # it would be judged on language identification too, which the others never face
        language = PROFILE_LANGUAGE if bundle.is_multilingual else None
        sets = []
        if self.profile.takes("heldout"):
            sets.append(("heldout", str(self.profile.path / "manifest.jsonl"), "heldout", None, None))
        else:  # a small profile: enrollment holds takes out only once it has enough of them
            self._event("info", f"profile {self.profile.path.name} has no held-out takes, so the report has no "
                                "held-out WER; enroll more takes (or pass --speaker-set) to measure one")
        if opts.speaker_set:
            sets.append(("speaker", opts.speaker_set, None, opts.speaker_filter, None))
        if opts.general_set:
            sets.append(("general", opts.general_set, None, None, opts.general_limit))
        done = self.state.done("evaluate") or {}
        # the original model's WER does not depend on the run: shared by all runs of this base
        shared_path = self.folder.parent / "original_wer.json"
        shared = json.loads(shared_path.read_text()) if shared_path.is_file() else {}
        t0 = time.monotonic()
        for set_name, path, split, filt, limit in sets:
            utts = load_dataset(path, filt, limit, split=split)
            label = path + (f" [{split}]" if split else "") + (f" [{filt}]" if filt else "") + (f" [first {limit}]" if limit else "")
            row = self.report.wer.setdefault(set_name, {"set": label, "utterances": len(utts)})
            for model_name, model in models.items():
                key = f"{set_name}/{model_name}/{label}"
                shared_key = f"{opts.base}/{label}" + (f" [{language}]" if language else "")
                if model is None:
                    continue
                if model_name == "original" and shared_key in shared:
                    done[key] = shared[shared_key]
                if key not in done:
                    b = replace(bundle, model=model.eval(), name=model_name)
                    tr = Transcriber(TranscribeOptions(model=opts.base, device=opts.device, threads=opts.threads,
                                                       vad=False, decoding=DecodingOptions(language=language)),
                                     bundle=b)
                    stage = f"eval {set_name} {model_name}"
                    counter = iter(range(1, len(utts) + 1))
                    rep = evaluate(utts, tr, set_name,
                                   on_utterance=lambda r, c=counter, s=stage, n=len(utts): self._event("progress", (s, next(c), n)))
                    done[key] = round(100 * rep.total.wer, 2)
                    self.state.finish("evaluate", done)
                    if model_name == "original":
                        shared[shared_key] = done[key]
                        atomic_write_text(shared_path, json.dumps(shared, indent=2))
                row[model_name] = done[key]
        self.report.stages["evaluate"] = {"wall_s": round(time.monotonic() - t0, 1)}


def run_adapt(profile, options: AdaptOptions, on_event: Callable | None = None) -> AdaptReport:
    """Compress and adapt `options.base` to `profile`'s voice; see the module docstring.

    Returns:
        AdaptReport (also saved as report.json in the run folder and the model folder).
    Raises:
        AdaptError: no training takes or conflicting earlier run; ModelError: base model.
    """
    return Adapter(profile, options, on_event).run()
