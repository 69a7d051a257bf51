"""What an adaptation measured (report.json in the run folder and the model folder)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

WER_LOSS_LIMIT = 2.0  # WER points (absolute) a compressed model may lose before adapt advises a larger ratio


@dataclass
class AdaptReport:
    """What `run_adapt` measured (saved as report.json).

    Attributes:
        profile: the profile folder; options: `AdaptOptions.to_flat()`; model_dir: where
            the compressed model was saved; params: parameter counts before and after;
            methods: the method blocks applied (as saved in config.json); plan: the
            AdaPTwin plan among them (kept for readers of earlier reports); data: windows and minutes trained on;
            stages: each stage's result (wall time, steps, losses); wer: WER (%) per
            evaluated set and model; tokenizer: after a vocabulary change, tokens per word
            of the original and the new tokenizer on the held-out text; footprint: after a
            vocabulary change, int8 bytes on disk and decoder ms per token of both models
            (`adapt.footprint`); notes: lines for the user (e.g. why this size).
    """

    profile: str
    options: dict
    model_dir: str | None = None
    params: dict = field(default_factory=dict)
    methods: list = field(default_factory=list)
    plan: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    wer: dict = field(default_factory=dict)
    tokenizer: dict = field(default_factory=dict)
    footprint: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def wer_increase(self) -> dict[str, float]:
        """WER points (absolute, %) the compressed model loses against the original, per evaluated
        set ("heldout", "speaker", "general"); negative where it is better. Sets without both
        figures are left out."""
        return {
            name: round(row["compressed"] - row["original"], 2)
            for name, row in self.wer.items()
            if "compressed" in row and "original" in row
        }

    def advice(self, limit: float = WER_LOSS_LIMIT) -> str | None:
        """One line for the user when the compressed model loses more than `limit` WER points
        on some set, naming the sets and what to try; None otherwise."""
        worse = {k: v for k, v in self.wer_increase().items() if v > limit}
        if not worse:
            return None
        ratio = self.options.get("target_ratio")
        lost = ", ".join(f"{v:.2f} points on {k}" for k, v in worse.items())
        levers = []
        if ratio is not None:
            levers.append(
                f"keep more of the encoder with a larger --target-ratio than {ratio} (what each ratio kept on "
                "the speakers measured so far: docs/results/adaptwin.md)"
            )
        if self.tokenizer:
            levers.append(
                f"keep more tokens with a larger --vocab-size than {self.options.get('vocab_size')} "
                "(docs/results/fvt.md)"
            )
        levers.append("give more enrollment and --replay audio")
        return f"the compressed model loses more than {limit:g} WER points against the original ({lost}); " + (
            " or ".join(levers)
        )


def size_note(options) -> str | None:
    """Why the encoder lost the share it did, when AdaPTwin ran at its default ratio (an
    `AdaptOptions`); None otherwise."""
    from asr_app.compression.adaptwin.options import AdaptwinOptions

    adaptwin = options.method("adaptwin")
    if adaptwin is None or adaptwin.target_ratio != AdaptwinOptions.target_ratio:
        return None
    return (
        f"{100 * (1 - adaptwin.target_ratio):.0f}% of the encoder removed: the default, which kept every "
        "test speaker's other recordings within 2.0 WER points and other voices within 2.2, with margin, "
        "without a replay set (docs/results/adaptwin.md); --target-ratio 0.75 removes 25%, the largest "
        "share measured to hold on every test speaker (one at the edge), and 0.55 removes 45% and loses more"
    )


def tokens_per_word(profile, ctx) -> dict:
    """Tokens per word of the original and the new tokenizer (`ctx.bundle.tokenizer`,
    `ctx.tokenizer`) on `profile`'s held-out takes' text (the training text,
    `ctx.transcripts`, when nothing is held out): the decoder's steps per word.

    Returns:
        {"text": which text, "words": n, "original": tokens per word, "compressed": ...}.
    """
    from asr_app.adapt.data import training_text

    heldout = [training_text(t.text) for t in profile.takes("heldout")]
    texts = heldout or ctx.transcripts
    words = sum(len(t.split()) for t in texts) or 1

    def per_word(tok) -> float:
        return round(sum(len(tok.encode(" " + t, add_special_tokens=False)) for t in texts) / words, 3)

    return {
        "text": "held-out takes" if heldout else "training takes",
        "words": words,
        "original": per_word(ctx.bundle.tokenizer),
        "compressed": per_word(ctx.tokenizer),
    }
