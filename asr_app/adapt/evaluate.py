"""The evaluate stage: WER of the original, the LoRA control and the compressed model."""

from __future__ import annotations

import json
import time
from dataclasses import replace

from asr_app.adapt.data import PROFILE_LANGUAGE


def evaluate_stage(ctx, bundles: dict) -> None:
    """WER of each model on the profile's held-out takes, `--speaker-set` and `--general-set`,
    into `ctx.report.wer`; each figure is saved as it is measured, so a resumed run skips it,
    and the original model's figures are shared by every run of the same base.

    Args:
        bundles: {name: the model's bundle (model, tokenizer, feature extractor) or None
            (not trained)}, e.g. original, lora_control, compressed; "original" is the base.
    """
    from asr_app.datasets import load_dataset
    from asr_app.decoding import DecodingOptions
    from asr_app.evaluate import evaluate
    from asr_app.outputs import atomic_write_text
    from asr_app.transcribe import TranscribeOptions, Transcriber

    opts = ctx.options
    ctx.event("stage", "evaluate")
    # every model decodes in the profile's language: a multilingual original left to detect
    # it would be judged on language identification too, which the others never face
    language = PROFILE_LANGUAGE if bundles["original"].is_multilingual else None
    sets = []
    if ctx.profile.takes("heldout"):
        sets.append(("heldout", str(ctx.profile.path / "manifest.jsonl"), "heldout", None, None))
    else:  # a small profile: enrollment holds takes out only once it has enough of them
        ctx.event(
            "info",
            f"profile {ctx.profile.path.name} has no held-out takes, so the report has no "
            "held-out WER; enroll more takes (or pass --speaker-set) to measure one",
        )
    if opts.speaker_set:
        sets.append(("speaker", opts.speaker_set, None, opts.speaker_filter, None))
    if opts.general_set:
        sets.append(("general", opts.general_set, None, None, opts.general_limit))
    done = ctx.done("evaluate") or {}
    # the original model's WER does not depend on the run: shared by all runs of this base
    shared_path = ctx.folder.parent / "original_wer.json"
    shared = json.loads(shared_path.read_text()) if shared_path.is_file() else {}
    t0 = time.monotonic()
    for set_name, path, split, filt, limit in sets:
        utts = load_dataset(path, filt, limit, split=split)
        label = (
            path
            + (f" [{split}]" if split else "")
            + (f" [{filt}]" if filt else "")
            + (f" [first {limit}]" if limit else "")
        )
        row = ctx.report.wer.setdefault(set_name, {"set": label, "utterances": len(utts)})
        for model_name, bundle in bundles.items():
            key = f"{set_name}/{model_name}/{label}"
            shared_key = f"{opts.base}/{label}" + (f" [{language}]" if language else "")
            if bundle is None:
                continue
            if model_name == "original" and shared_key in shared:
                done[key] = shared[shared_key]
            if key not in done:
                bundle.model.eval()
                b = replace(bundle, name=model_name)
                tr = Transcriber(
                    TranscribeOptions(
                        model=opts.base,
                        device=opts.device,
                        threads=opts.threads,
                        vad=False,
                        decoding=DecodingOptions(language=language),
                    ),
                    bundle=b,
                )
                stage = f"eval {set_name} {model_name}"
                counter = iter(range(1, len(utts) + 1))
                rep = evaluate(
                    utts,
                    tr,
                    set_name,
                    on_utterance=lambda r, c=counter, s=stage, n=len(utts): ctx.event("progress", (s, next(c), n)),
                )
                done[key] = round(100 * rep.total.wer, 2)
                ctx.finish("evaluate", done)
                if model_name == "original":
                    shared[shared_key] = done[key]
                    atomic_write_text(shared_path, json.dumps(shared, indent=2))
            row[model_name] = done[key]
    ctx.report.stages["evaluate"] = {"wall_s": round(time.monotonic() - t0, 1)}
