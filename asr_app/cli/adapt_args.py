"""The arguments of `asr-app adapt` (asr_app.cli.adapt runs the command).

The shared options' defaults are `AdaptOptions`' own (`field_default`). The AdaPTwin options
(--target-ratio, --allocation, --qk, --ffn-method, ...) default to None, meaning
`AdaptwinOptions`' own default, filled into the help when it is shown
(`_AdaptHelpFormatter`), so a flag not given never overrides the method's options. --device differs from
`AdaptOptions.device`: "auto" picks the CUDA GPU when torch sees one (`resolve_train_device`).
"""

from __future__ import annotations

import argparse

from asr_app.cli.common import add_command, choice_help, field_default

EXAMPLES = """examples:
  asr-app adapt --profile alice
  asr-app adapt --profile alice --target-ratio 0.85 --general-set ../shared/data/librispeech/train-clean-5
  asr-app adapt --profile alice --methods adaptwin fvt --target-ratio 0.85 --domain-text terms.txt
  asr-app adapt --profile alice --methods cald --chunk-frames 100
  asr-app adapt --profile alice --unlabeled my-recordings/ --live-sessions
  asr-app adapt --profile alice --refresh"""

# argument dest -> AdaptwinOptions field, for the options whose None means the method's default
METHOD_OPTIONS = {
    "target_ratio": "target_ratio",
    "allocation": "allocation",
    "qk": "mode",
    "ffn_method": "ffn_method",
    "decoder_keep": "decoder_keep",
    "decoder_attention_rank": "decoder_attention_rank",
    "twin_stats": "twin_stats",
    "centre": "centre",
    "query_bias_fit": "query_bias_fit",
    "progressive": "progressive",
}
# argument dest -> FvtOptions field, None meaning the method's default (as above)
FVT_OPTIONS = {"vocab_size": "vocab_size", "vocab_init": "init", "domain_text": "domain_text"}
# argument dest -> CaldOptions field, None meaning the method's default (as above)
CALD_OPTIONS = {
    "feature_map": "feature_map",
    "chunk_frames": "chunk_frames",
    "window_frames": "window_frames",
    "train_chunks": "train_chunks",
    "transfer_epochs": "transfer_epochs",
}
VOCAB_INITS = {
    "fvt": "a new token starts as the mean of its original pieces",
    "pvt": "shared tokens keep their rows, new ones random (baseline)",
    "subset": "only original tokens, every row exact (baseline)",
}
ALLOCATIONS = {"sensitivity": "from measured sensitivity", "uniform": "one rank everywhere"}
QK_MODES = {"joint": "product twins", "separate": "Q and K truncated separately (ablation)"}
FFN_METHODS = {
    "lowrank": "as low-rank fc1/fc2 pairs",
    "prune": "pruned to the hidden neurons the same parameters buy, fc2 refit by least squares",
}
TWIN_STATS = {
    "input": "the layer input's statistics",
    "head": "each head's attention-mixed input, measured per head",
}
QUERY_BIAS_FITS = {"plain": "least squares on the weights", "weighted": "weighted by the keys' statistics"}
LORA_PLACES = {
    "encoder": "the encoder's linears",
    "decoder": "the decoder's linears; the encoder stays as layer-wise distillation left it",
    "both": "the encoder's and the decoder's linears",
}


def _method_help(dest: str) -> str | None:
    """Help of an AdaPTwin option that states its default, read from `AdaptwinOptions`."""
    from asr_app.compression.methods import get_method

    def d(name: str):
        return field_default(get_method("adaptwin").options_class, name)

    if dest == "target_ratio":
        ratio = d("target_ratio")
        return f"encoder parameters to keep (default {ratio:g}: {100 * (1 - ratio):.0f}%% removed)"
    if dest == "allocation":
        return choice_help(ALLOCATIONS, d("allocation"), prefix="ranks per layer and head ")
    if dest == "qk":
        return choice_help(QK_MODES, d("mode"))
    if dest == "ffn_method":
        return choice_help(FFN_METHODS, d("ffn_method"), prefix="encoder feed-forward blocks ")
    if dest == "twin_stats":
        return choice_help(TWIN_STATS, d("twin_stats"), prefix="what whitens each value/output twin: ")
    if dest == "centre":
        return (
            "factor the twins on mean-centred statistics, the error on the means moved into the biases "
            f"(default {'on' if d('centre') else 'off'})"
        )
    if dest == "query_bias_fit":
        return choice_help(QUERY_BIAS_FITS, d("query_bias_fit"), prefix="the factored heads' query bias: ")
    fvt = get_method("fvt").options_class
    if dest == "vocab_size":
        return (
            f"FVT: text tokens of the speaker's tokenizer (default {field_default(fvt, 'vocab_size')}; "
            "Whisper's 1,608 special and timestamp tokens come on top)"
        )
    if dest == "vocab_init":
        return choice_help(VOCAB_INITS, field_default(fvt, "init"), prefix="FVT: how the new embedding starts: ")
    return None


class _AdaptHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples as written; the AdaPTwin options' help with their defaults, filled in only when shown."""

    def _get_help_string(self, action):
        """The help of `action` before %-expansion (the argparse hook ArgumentDefaultsHelpFormatter uses)."""
        named = action.dest in METHOD_OPTIONS or action.dest in FVT_OPTIONS
        return (_method_help(action.dest) if named else None) or action.help


def add_arguments(sub) -> argparse.ArgumentParser:
    """Add the `adapt` subcommand and its arguments to the subparsers `sub`; returns its parser."""
    from asr_app.adapt import AdaptOptions

    def d(name: str):
        return field_default(AdaptOptions, name)

    method_default = "AdaPTwin option; default: AdaptwinOptions'"  # replaced by `_method_help` when shown
    p = add_command(
        sub,
        "adapt",
        "compress and adapt Whisper to a profile's voice (AdaPTwin, FVT)",
        EXAMPLES,
        formatter_class=_AdaptHelpFormatter,
    )
    p.add_argument("--profile", default=None, help="the enrollment profile to adapt to")
    p.add_argument("--profile-dir", default=None, help="a profile folder outside the default place")
    p.add_argument("--base", default=d("base"), help="base model: tiny.en, base, a folder or a hub id")
    from asr_app.adapt.options import DEFAULT_METHODS
    from asr_app.compression.methods import all_methods

    p.add_argument(
        "--methods",
        nargs="+",
        choices=sorted(all_methods()),
        default=list(DEFAULT_METHODS),
        help=f"compression methods to apply, in order (default: {' '.join(DEFAULT_METHODS)})",
    )
    p.add_argument("--target-ratio", type=float, default=None, help=method_default)
    p.add_argument(
        "--time-budget-min", type=float, default=d("time_budget_min"), help="wall-clock budget of the training stages"
    )
    p.add_argument(
        "--replay",
        nargs="*",
        default=d("replay"),
        help="datasets or manifests of other voices mixed into fine-tuning (against forgetting)",
    )
    p.add_argument(
        "--unlabeled",
        nargs="+",
        metavar="PATH",
        default=d("unlabeled"),
        help="folders or files of audio without transcripts (recordings, podcasts, live sessions): "
        "the original model transcribes them once and fine-tuning trains on its transcripts "
        "(sequence-level distillation); with fvt they also weigh into the tokenizer",
    )
    p.add_argument(
        "--live-sessions",
        action="store_true",
        help="add the profile's saved live sessions (`transcribe --live --profile`) to the unlabeled audio",
    )
    p.add_argument(
        "--refresh",
        nargs="?",
        const="",
        metavar="MODEL",
        help="re-adapt the profile's latest model (or MODEL) with the takes and live sessions added "
        "since it was made, starting from it; its own options are kept (--threads, --device and "
        "the evaluation sets apply)",
    )
    p.add_argument(
        "--replay-ratio", type=float, default=d("replay_ratio"), help="replay audio per minute of speaker audio"
    )
    p.add_argument(
        "--general-set",
        default=d("general_set"),
        help="dataset of other speakers for the report's general WER, e.g. LibriSpeech train-clean-5",
    )
    p.add_argument("--general-limit", type=int, default=d("general_limit"), help="first N utterances of --general-set")
    p.add_argument(
        "--speaker-set",
        default=d("speaker_set"),
        help="more labelled recordings of the same speaker to evaluate on (beyond held-out takes)",
    )
    p.add_argument(
        "--speaker-filter", default=d("speaker_filter"), help="utterance ids of --speaker-set to keep, e.g. 'LJ002-*'"
    )
    p.add_argument("--allocation", choices=tuple(ALLOCATIONS), default=None, help=method_default)
    p.add_argument("--plain", action="store_true", help="plain SVD instead of speaker-whitened factors (ablation)")
    p.add_argument("--qk", choices=tuple(QK_MODES), default=None, help=method_default)
    p.add_argument("--attention-only", action="store_true", help="leave fc1/fc2 dense")
    p.add_argument("--ffn-method", choices=tuple(FFN_METHODS), default=None, help=method_default)
    p.add_argument("--twin-stats", choices=tuple(TWIN_STATS), default=None, help=method_default)
    p.add_argument("--centre", action=argparse.BooleanOptionalAction, default=None, help=method_default)
    p.add_argument("--query-bias-fit", choices=tuple(QUERY_BIAS_FITS), default=None, help=method_default)
    p.add_argument(
        "--progressive",
        action="store_true",
        default=None,
        help="cut the encoder in steps of 15%% (recovering and measuring the statistics again after "
        "each) instead of all at once",
    )
    p.add_argument(
        "--decoder-keep",
        type=float,
        default=None,
        metavar="SHARE",
        help="also factor the decoder's fc1/fc2, keeping this share of their parameters (default: decoder dense)",
    )
    p.add_argument(
        "--decoder-attention-rank",
        type=int,
        default=None,
        metavar="R",
        help="also factor every decoder self- and cross-attention at this rank per head "
        "(head_dim is 64; the KV cache shrinks to R wide; default: dense)",
    )
    p.add_argument("--vocab-size", type=int, default=None, metavar="N", help="FVT option")
    p.add_argument("--vocab-init", choices=tuple(VOCAB_INITS), default=None, help="FVT option")
    p.add_argument(
        "--domain-text",
        nargs="+",
        default=None,
        metavar="FILE",
        help="FVT: text files of your own words (names, terms, a field's vocabulary) weighed into the tokenizer",
    )
    p.add_argument(
        "--feature-map",
        choices=("hedgehog", "elu", "relu"),
        default=None,
        help="CALD: the linear attention's feature map (default hedgehog: learned; elu, relu: fixed baselines)",
    )
    p.add_argument(
        "--chunk-frames",
        type=int,
        default=None,
        metavar="N",
        help="CALD: encoder frames (20 ms each) per chunk, offline and live (default 100: 2 s)",
    )
    p.add_argument(
        "--window-frames",
        type=int,
        default=None,
        metavar="N",
        help="CALD: frames before a chunk still reached by exact softmax (default 50: 1 s)",
    )
    p.add_argument(
        "--train-chunks",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="CALD: chunk sizes drawn per batch in training, 0 for the whole window (default 25 50 100 200 0)",
    )
    p.add_argument(
        "--transfer-epochs",
        type=float,
        default=None,
        metavar="E",
        help="CALD: passes of attention transfer over the speaker's windows (default 1; 0 skips it)",
    )
    p.add_argument("--skip", nargs="*", choices=("layerwise", "finetune"), help="leave out recovery stages (ablation)")
    p.add_argument("--no-control", action="store_true", help="skip the LoRA-only control model")
    p.add_argument(
        "--lora-rank",
        type=int,
        default=d("lora_rank"),
        help=f"rank of the LoRA adapters in recovery (default {d('lora_rank')})",
    )
    p.add_argument(
        "--finetune-lora",
        choices=tuple(LORA_PLACES),
        default=d("finetune_lora"),
        help=f"where end-to-end fine-tuning puts its LoRA adapters (default: {LORA_PLACES[d('finetune_lora')]})",
    )
    _add_training_args(p, d)
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to train (default auto: a CUDA GPU when torch sees one, else the CPU)",
    )
    p.add_argument(
        "--threads", type=int, default=d("threads"), help="CPU threads for training (default: torch's choice)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _add_training_args(p: argparse.ArgumentParser, d) -> None:
    """Epochs, batch, distillation weights, windows, augmentation and seed; `d(name)` is AdaptOptions' default."""
    vtlp, share, speeds = d("layerwise_vtlp"), d("calibration_replay_share"), d("speed_perturb")
    p.add_argument(
        "--layerwise-epochs",
        type=float,
        default=d("layerwise_epochs"),
        help=f"passes over the training windows in layer-wise distillation (default {d('layerwise_epochs'):g})",
    )
    p.add_argument(
        "--finetune-epochs",
        type=float,
        default=d("finetune_epochs"),
        help=f"passes over the training windows in end-to-end fine-tuning (default {d('finetune_epochs'):g})",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=d("batch_size"),
        help=f"30-second windows per training step (default {d('batch_size')})",
    )
    p.add_argument("--kd-weight", type=float, default=d("kd_weight"), help="weight of distillation toward the original")
    p.add_argument(
        "--layerwise-teacher-input",
        type=float,
        default=d("layerwise_teacher_input"),
        metavar="W",
        help="layer-wise distillation: weight of the term feeding each layer the original model's "
        "input to it, beside its compressed predecessors' output "
        f"(default {d('layerwise_teacher_input'):g}; 0 turns it off)",
    )
    p.add_argument(
        "--layerwise-vtlp",
        type=float,
        default=vtlp,
        metavar="V",
        help="layer-wise distillation: warp each window's log-mel in frequency by a random factor in "
        f"[1-V, 1+V] (vocal tract length perturbation; default {vtlp:g}{' = off' if not vtlp else ''})",
    )
    p.add_argument(
        "--layerwise-loss",
        choices=("nmse", "decoder"),
        default=d("layerwise_loss"),
        help="layer-wise distillation compares each layer's output raw (nmse) or as it is read next "
        "(decoder: after the next LayerNorm; the last layer in the decoder's cross-attention "
        f"key/value space) (default {d('layerwise_loss')})",
    )
    p.add_argument(
        "--layerwise-padding-weight",
        type=float,
        default=d("layerwise_padding_weight"),
        metavar="W",
        help="layer-wise distillation: weight of the padded positions after each window's audio "
        f"(default {d('layerwise_padding_weight'):g}; 1 weighs them as speech)",
    )
    p.add_argument(
        "--layerwise-attention-kl",
        type=float,
        default=d("layerwise_attention_kl"),
        metavar="W",
        help="layer-wise distillation: weight of the per-head attention-map KL toward the original "
        f"(default {d('layerwise_attention_kl'):g}; 0 turns it off)",
    )
    p.add_argument(
        "--sensitivity",
        choices=("noise", "fisher"),
        default=d("sensitivity"),
        help="what weighs each site's error in rank allocation: encoder-output error from injected "
        "noise, or squared gradients of the decoder's loss on your transcripts, per head "
        f"(default {d('sensitivity')})",
    )
    p.add_argument(
        "--full-windows", action="store_true", help="pack every training window to 29 s (default: random fill lengths)"
    )
    p.add_argument(
        "--calibration-replay-share",
        type=float,
        default=share,
        help="share of the whitening statistics taken from --replay audio "
        f"(default {share:g}{': speaker only' if not share else ''})",
    )
    p.add_argument(
        "--speed-perturb",
        type=float,
        nargs="*",
        default=list(speeds),
        metavar="SPEED",
        help="train also on copies of the speaker and replay takes played at these speeds "
        f"(default {' '.join(f'{s:g}' for s in speeds) or 'none'}; give none to turn it off)",
    )
    p.add_argument("--seed", type=int, default=d("seed"), help="seed of window packing, sampling and initialization")
