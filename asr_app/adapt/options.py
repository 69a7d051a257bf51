"""Options of one adaptation run: the shared ones, and one options dataclass per method."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from asr_app.errors import AsrAppError

DEFAULT_METHODS = ("adaptwin",)


class AdaptError(AsrAppError):
    """Adaptation cannot run (no profile data, bad options)."""


def method_options(name: str, **values):
    """The options dataclass of the registered method `name`, with `values` set.

    Raises:
        ValueError: unknown method or field.
    """
    from asr_app.compression.methods import get_method

    cls = get_method(name).options_class
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(sorted(unknown))}")
    return cls(**values)


def _default_methods() -> tuple:
    return tuple(method_options(name) for name in DEFAULT_METHODS)


# (AdaptOptions field, its tag in a run's folder name), in the order the name lists them
RUN_NAME_TAGS = (
    ("kd_weight", "kd"),
    ("layerwise_teacher_input", "lwti"),
    ("layerwise_vtlp", "vtlp"),
    ("layerwise_loss", "ll"),
    ("layerwise_padding_weight", "pad"),
    ("layerwise_attention_kl", "akl"),
    ("sensitivity", "sens"),
    ("lora_rank", "lora"),
    ("batch_size", "bs"),
    ("seed", "seed"),
    ("finetune_lora", "ft"),
)


@dataclass(frozen=True)
class AdaptOptions:
    """Options of one adaptation run shared by every method; each chosen method's own
    options dataclass is in `methods`, applied in that order.

    Attributes:
        base: base model (built-in name, folder or hub id).
        methods: one options dataclass per method (`compression.METHODS[name].options_class`,
            e.g. `AdaptwinOptions(target_ratio=0.55)`), in the order they are applied.
        lora_rank: LoRA rank in both training stages.
        finetune_lora: where fine-tuning (and the control) puts its LoRA adapters:
            "decoder" (default: every decoder attention and feed-forward linear; the
            encoder stays as layer-wise distillation left it), "encoder" (the compressed
            layers) or "both". A method that compresses the decoder makes "encoder" "both".
        layerwise_epochs, finetune_epochs: passes over the speaker's windows.
        batch_size: windows per optimizer step.
        layerwise_lr, finetune_lr: peak learning rates.
        kd_weight: weight of the KL term toward the original model in fine-tuning.
        layerwise_teacher_input: weight of layer-wise distillation's term that feeds each
            layer the original model's input to it, beside the term that feeds the layer's
            own compressed predecessors' output (0: that term only; see `layerwise_distill`).
        layerwise_vtlp: layer-wise distillation warps each window's log-mel in frequency by a
            random factor in [1 - v, 1 + v] (vocal tract length perturbation, applied to
            teacher and student alike; 0 = off; see `compression.distill.warp_mel`).
        layerwise_loss: where layer-wise distillation compares layer outputs: "nmse" (raw)
            or "decoder" (as the next LayerNorm and the decoder's cross-attention read
            them; `compression.distill.LayerTargets`).
        layerwise_padding_weight: layer-wise weight of the padded positions after each
            window's audio, in [0, 1].
        layerwise_attention_kl: layer-wise weight of the per-head attention-map KL toward
            the original (`compression.distill.attention_map_kl`; 0 = off).
        replay: dataset folders or manifests of other voices mixed into fine-tuning.
        replay_ratio: replay windows per speaker window (at most what the sets hold).
        unlabeled: folders or files of audio without transcripts; the original model
            transcribes them and every clip joins the replay windows (sequence-level
            knowledge distillation, `asr_app.adapt.unlabeled`).
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
        sensitivity: how calibration weighs the error at each site for rank allocation:
            "noise" (encoder-output error from injected noise, 2 windows;
            `compression.calibrate.measure_sensitivity`) or "fisher" (squared gradients of
            the decoder's loss on `sensitivity_windows` windows, per head for the query/key
            twins; `compression.fisher.fisher_sensitivity`).
        sensitivity_windows: speaker windows the Fisher gains average over.
        refresh_from: the profile model this run refreshes (`asr_app.adapt.refresh`): no
            calibration or compression, recovery starts from that model's weights.
        refresh_key: digest of the takes and sessions new to it (names the run's folder).
        refresh_share: the share of a full run's training steps a refresh takes.
    Raises:
        ValueError: out-of-range values, naming the field.
    """

    base: str = "tiny.en"
    methods: tuple = field(default_factory=_default_methods)
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
    layerwise_loss: str = "decoder"
    layerwise_padding_weight: float = 0.1
    layerwise_attention_kl: float = 0.5
    replay: tuple[str, ...] = ()
    replay_ratio: float = 1.0
    unlabeled: tuple[str, ...] = ()
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
    sensitivity: str = "noise"
    sensitivity_windows: int = 16
    refresh_from: str | None = None
    refresh_key: str = ""
    refresh_share: float = 1.0

    def __post_init__(self):
        names = [m.method for m in self.methods]
        if len(set(names)) != len(names):
            raise ValueError(f"methods must not repeat, got {names}")
        vocabulary = [m.method for m in self.methods[:-1] if getattr(m, "changes_vocabulary", False)]
        if vocabulary:
            # the layer methods' stages start from the original model's layers and vocabulary
            raise ValueError(f"{vocabulary[0]} changes the vocabulary and must come last in methods, got {names}")
        for m in self.methods:  # a method that does not compose with some others says so
            if hasattr(m, "check_methods"):
                m.check_methods(names)
        if set(self.stages) - {"layerwise", "finetune"}:
            raise ValueError(f"stages must be among layerwise, finetune; got {self.stages}")
        if not 0 <= self.calibration_replay_share < 1:
            raise ValueError(f"calibration_replay_share must be in [0, 1), got {self.calibration_replay_share}")
        if any(not 0.5 <= sp <= 2.0 or sp == 1.0 for sp in self.speed_perturb):
            raise ValueError(
                f"speed_perturb speeds must be in [0.5, 2] and not 1 (e.g. 0.9 1.1; none turns it off), "
                f"got {self.speed_perturb}"
            )
        if self.layerwise_teacher_input < 0:
            raise ValueError(f"layerwise_teacher_input must be >= 0, got {self.layerwise_teacher_input}")
        if not 0 <= self.layerwise_vtlp < 0.5:
            raise ValueError(f"layerwise_vtlp must be in [0, 0.5) (e.g. 0.1), got {self.layerwise_vtlp}")
        if self.layerwise_loss not in ("nmse", "decoder"):
            raise ValueError(f"layerwise_loss must be 'nmse' or 'decoder', got {self.layerwise_loss!r}")
        if not 0 <= self.layerwise_padding_weight <= 1:
            raise ValueError(f"layerwise_padding_weight must be in [0, 1], got {self.layerwise_padding_weight}")
        if self.layerwise_attention_kl < 0:
            raise ValueError(f"layerwise_attention_kl must be >= 0, got {self.layerwise_attention_kl}")
        if self.finetune_lora not in ("encoder", "decoder", "both"):
            raise ValueError(f"finetune_lora must be 'encoder', 'decoder' or 'both', got {self.finetune_lora!r}")
        if self.sensitivity not in ("noise", "fisher"):
            raise ValueError(f"sensitivity must be 'noise' or 'fisher', got {self.sensitivity!r}")
        if self.sensitivity_windows < 1:
            raise ValueError(f"sensitivity_windows must be >= 1, got {self.sensitivity_windows}")
        if not 0 < self.refresh_share <= 1:
            raise ValueError(f"refresh_share must be in (0, 1], got {self.refresh_share}")
        if self.batch_size < 1 or self.lora_rank < 1:
            raise ValueError("batch_size and lora_rank must be >= 1")

    @classmethod
    def from_flat(cls, methods: tuple[str, ...] = DEFAULT_METHODS, **values) -> AdaptOptions:
        """Options from one flat set of keyword values (as the command line has them): each
        value goes to the shared field or the chosen method's field of that name.

        Raises:
            ValueError: a value no shared field or chosen method takes; bad values.
        """
        shared = {f.name for f in dataclasses.fields(cls)} - {"methods"}
        per_method = []
        rest = {k: v for k, v in values.items() if k not in shared}
        for name in methods:
            from asr_app.compression.methods import get_method

            fields = {f.name for f in dataclasses.fields(get_method(name).options_class)}
            per_method.append(method_options(name, **{k: v for k, v in rest.items() if k in fields}))
            rest = {k: v for k, v in rest.items() if k not in fields}
        if rest:
            from asr_app.compression.methods import all_methods

            owners = sorted(
                name
                for name, m in all_methods().items()
                if set(rest) & {f.name for f in dataclasses.fields(m.options_class)}
            )
            hint = f" (an option of {', '.join(owners)}: add it to --methods)" if owners else ""
            raise ValueError(f"no adapt option {', '.join(sorted(rest))} for methods {', '.join(methods)}{hint}")
        return cls(methods=tuple(per_method), **{k: v for k, v in values.items() if k in shared})

    def method(self, name: str):
        """The options of method `name`, or None when it is not chosen."""
        return next((m for m in self.methods if m.method == name), None)

    @property
    def method_names(self) -> tuple[str, ...]:
        return tuple(m.method for m in self.methods)

    @property
    def compresses_decoder(self) -> bool:
        """Whether some chosen method compresses the decoder."""
        return any(m.compresses_decoder for m in self.methods)

    @property
    def changes_vocabulary(self) -> bool:
        """Whether some chosen method gives the model a new tokenizer (its options say so
        with `changes_vocabulary`, default False)."""
        return any(getattr(m, "changes_vocabulary", False) for m in self.methods)

    @property
    def compresses_encoder(self) -> bool:
        """Whether some chosen method changes the encoder (layer-wise distillation runs
        only then); a method's options say so with `compresses_encoder` (default True)."""
        return any(getattr(m, "compresses_encoder", True) for m in self.methods)

    @property
    def distills_layerwise(self) -> bool:
        """Whether the layer-wise distillation stage runs: the encoder was compressed, and
        (for a refresh) fine-tuning left the encoder alone; a refresh of a model whose
        encoder fine-tuning adapted would undo that by distilling it toward the original."""
        if self.refresh_from and self.finetune_lora != "decoder":
            return False
        return self.compresses_encoder

    def to_flat(self) -> dict:
        """JSON-able dict of every option: the shared fields, each method's fields, and
        "methods" (their names). The layout of state.json and the report's options."""
        import json

        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "methods"}
        for m in self.methods:
            flat.update(dataclasses.asdict(m))
        flat["methods"] = list(self.method_names)
        return json.loads(json.dumps(flat))

    def run_name(self) -> str:
        """Folder name of this run: base, each method's part (ratio and what differs from
        its defaults), then the shared options that differ from the defaults; a refresh is
        the refreshed model's name (without its own refresh tag) and `-refresh<key>`."""
        if self.refresh_from:
            return re.sub(r"-refresh[0-9a-f]+$", "", self.refresh_from) + f"-refresh{self.refresh_key}"
        name = re.sub(r"[^A-Za-z0-9.]+", "_", Path(self.base).name or self.base)
        name += "".join(m.run_name() for m in self.methods)
        if self.method_names != DEFAULT_METHODS:
            name += "-" + "+".join(self.method_names)
        if not self.varied_windows:
            name += "-fullwin"
        if self.calibration_replay_share:
            name += f"-calmix{self.calibration_replay_share:g}"
        default = AdaptOptions.__dataclass_fields__
        if (self.layerwise_epochs, self.finetune_epochs) != (
            default["layerwise_epochs"].default,
            default["finetune_epochs"].default,
        ):
            name += f"-ep{self.layerwise_epochs:g}+{self.finetune_epochs:g}"
        for field_name, tag in RUN_NAME_TAGS:  # one option each, named only when not its default
            value = getattr(self, field_name)
            if value != default[field_name].default:
                name += f"-{tag}{format(value, 'g') if isinstance(value, float) else value}"
        if tuple(self.speed_perturb) != default["speed_perturb"].default:
            name += "-sp" + ("_".join(f"{sp:g}" for sp in self.speed_perturb) or "off")
        if self.unlabeled:
            digest = hashlib.sha1("\0".join(sorted(map(str, self.unlabeled))).encode()).hexdigest()[:6]
            name += f"-unl{digest}"
        if tuple(self.stages) != ("layerwise", "finetune"):
            name += "-" + ("+".join(self.stages) or "twinsonly")
        return name
