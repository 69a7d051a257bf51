"""The adaptation pipeline: named stages run in order, each resumable by name.

    data                pack the profile's training takes into 30-second windows with
                        timestamped targets (replay sets too); held-out takes are never
                        trained on
    calibrate           activation second moments and site sensitivities on the speaker's
                        windows (when a chosen method needs them)
    <method>.<stage>    each chosen method's stages, in the order of `--methods`
                        (AdaPTwin: `adaptwin.factor`, rank allocation and surgery)
    layerwise           LoRA, layer-wise distillation toward the original, merge
    finetune            LoRA again, end-to-end on speaker + replay windows (+ teacher KL)
    save                the compressed model into `<profile>/models/<run>/`, listed in
                        profile.json, so `--profile NAME` loads it everywhere
    footprint           after a vocabulary change: int8 bytes on disk and decoder time per
                        token of the original and the saved model (onnxruntime)
    control             the original model with the same LoRA fine-tuning only
    evaluate            WER of original, control and compressed
    report              report.json in the run folder and the model folder
Stage results are kept in `<profile>/adapt/<run>/state.json`; an interrupted run resumes at
the stage, and inside training stages at the last saved step, where it stopped.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from dataclasses import replace

from asr_app.adapt.context import Context
from asr_app.adapt.data import PROFILE_LANGUAGE, MelStore, pack_windows
from asr_app.adapt.options import AdaptError, AdaptOptions
from asr_app.adapt.report import AdaptReport, size_note, tokens_per_word
from asr_app.adapt.state import RunState, save_model_state

SHARED_BEFORE = ("data", "calibrate")
WINDOWS_DIR = "windows"  # the packed log-mel windows of a run (removed when it ends; packed again on resume)
SHARED_AFTER = ("layerwise", "finetune", "save", "control", "evaluate", "report")


class Adapter:
    """Runs the stages of one adaptation (see the module docstring).

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
        self.folder = profile.path / "adapt" / options.run_name()
        self.state = RunState(self.folder, options)
        self.ctx = Context(profile, options, self.folder, self.state, on_event or (lambda kind, payload: None))

    @property
    def report(self) -> AdaptReport:
        return self.ctx.report

    def stage_names(self) -> list[str]:
        """Every stage this run goes through, in order."""
        from asr_app.compression.methods import get_method

        if self.options.refresh_from:
            skip = {"control"} | ({"layerwise"} if not self.options.distills_layerwise else set())
            return ["data", *(n for n in SHARED_AFTER if n not in skip)]
        names = list(SHARED_BEFORE)
        for opts in self.options.methods:
            names += [f"{opts.method}.{s.name}" for s in get_method(opts.method).stages(opts)]
        after = [n for n in SHARED_AFTER if n != "layerwise" or self.options.distills_layerwise]
        if self.options.changes_vocabulary:
            after.insert(after.index("save") + 1, "footprint")
        return names + after

    def run(self) -> AdaptReport:
        """Run (or resume) every stage in order; returns the report, also saved in the run
        folder. The packed windows (`WINDOWS_DIR`) are removed however the run ends: a
        resumed run packs them again."""
        import shutil

        try:
            return self._run()
        finally:
            shutil.rmtree(self.folder / WINDOWS_DIR, ignore_errors=True)

    def _run(self) -> AdaptReport:
        import torch

        from asr_app.compression.methods import get_method
        from asr_app.models import load_model

        ctx, opts = self.ctx, self.options
        if opts.threads:
            torch.set_num_threads(opts.threads)
        torch.manual_seed(opts.seed)
        t_start = time.monotonic()
        ctx.bundle = load_model(opts.base, opts.device)
        ctx.teacher = ctx.bundle.model
        for p in ctx.teacher.parameters():
            p.requires_grad_(False)
        self._data()
        if opts.refresh_from:  # the saved model has its structure: recovery goes on from it
            from asr_app.adapt.refresh import load_source

            ctx.model, ctx.blocks = load_source(self.profile, opts, ctx.device)
            before_refresh = copy.deepcopy(ctx.model)  # evaluated beside the refreshed one
            ctx.data["refresh"] = {"from": opts.refresh_from, "step_share": opts.refresh_share}
        else:
            self._calibrate()
            for method_opts in opts.methods:
                for stage in get_method(method_opts.method).stages(method_opts):
                    self._method_stage(f"{method_opts.method}.{stage.name}", stage)
        self._count_params()
        if (note := size_note(opts)) is not None and not opts.refresh_from:
            ctx.report.notes.append(note)
            ctx.event("info", "note: " + note)
        if ctx.model is None:  # no method changed the structure: recovery trains a copy
            ctx.model = copy.deepcopy(ctx.teacher)
        from asr_app.adapt.recovery import train_stage

        for name in ("layerwise", "finetune"):
            if name == "layerwise" and not opts.distills_layerwise:
                continue
            if name in opts.stages:
                ctx.model = train_stage(ctx, name, ctx.model)
        self._save()
        if ctx.tokenizer is not None:  # the vocabulary changed: what the new one saves where it runs
            self._footprint()
        control = train_stage(ctx, "control", copy.deepcopy(ctx.teacher)) if opts.control else None
        ctx.report.stages["adapt_total"] = {"wall_s": round(time.monotonic() - t_start, 1)}
        from asr_app.adapt.evaluate import evaluate_stage

        bundles = {
            "original": ctx.bundle,
            "lora_control": replace(ctx.bundle, model=control) if control is not None else None,
            "compressed": ctx.compressed_bundle(ctx.model),
        }
        if opts.refresh_from:  # the model before the refresh, beside it
            bundles["before_refresh"] = ctx.compressed_bundle(before_refresh)
        evaluate_stage(ctx, bundles)
        ctx.report.model_dir = str(ctx.model_dir)
        ctx.report.stages["total"] = {"wall_s": round(time.monotonic() - t_start, 1)}
        self._report()
        return ctx.report

    def _count_params(self) -> None:
        """Parameters of the original and the compressed model into the report."""
        from asr_app.compression.surgery import param_counts

        ctx = self.ctx
        before = param_counts(ctx.teacher)
        after = param_counts(ctx.model) if ctx.model is not None else before
        ctx.report.params = {
            "original": before,
            "compressed": after,
            "removed_share": {k: round(1 - after[k] / before[k], 4) for k in before},
        }
        ctx.report.methods = list(ctx.blocks)
        ctx.report.plan = next((b["plan"] for b in ctx.blocks if "plan" in b), {})
        if ctx.tokenizer is not None:
            ctx.report.tokenizer = tokens_per_word(self.profile, ctx)

    def _method_stage(self, key: str, stage) -> None:
        """Run one method stage, then save the model it left (`<key>.safetensors`) and the
        method blocks so far; on resume the stage is skipped and the model rebuilt from
        them. A folder from before stages saved their model (no file) runs a stage whose
        `rebuild_on_resume` is set again, with its earlier result to rebuild from."""
        from asr_app.compression.checkpoint import build_structure

        ctx = self.ctx
        ctx.event("stage", key)
        done, weights = ctx.done(key), self.folder / f"{key}.safetensors"
        if done is not None and "blocks" in done and weights.is_file():
            from safetensors.torch import load_model

            model = copy.deepcopy(ctx.teacher).cpu()
            build_structure(model, {"methods": done["blocks"]})
            load_model(model, str(weights), strict=True)
            ctx.model, ctx.blocks = model.to(ctx.device), list(done["blocks"])
            for p in ctx.model.parameters():
                p.requires_grad_(False)
            if stage.resume is not None:
                stage.resume(ctx, done)
            ctx.report.stages[key] = {"wall_s": done.get("wall_s")}
            return
        if done is not None and not stage.rebuild_on_resume:
            done = None  # its model was not kept: run it again
        try:
            result = stage.run(ctx)
        except ValueError as e:  # the method refuses these options for this model
            raise AdaptError(str(e)) from None
        if ctx.model is not None:
            save_model_state(ctx.model, weights)
        ctx.finish(key, {**result, "blocks": list(ctx.blocks)})
        ctx.report.stages[key] = {"wall_s": result.get("wall_s")}

    # -- the shared stages ----------------------------------------------------------------
    def _data(self) -> None:
        """Pack the training takes and the replay sets into windows, plus their speed-perturbed
        copies (recomputed on resume: packing is deterministic given the seed)."""
        from asr_app.datasets import load_dataset

        ctx, opts = self.ctx, self.options
        t0 = time.monotonic()
        ctx.event("stage", "data")
        manifest = self.profile.path / "manifest.jsonl"
        train = load_dataset(manifest, split="train") if manifest.exists() else []
        # what this model trains on, saved with it: a later --refresh trains on what is new
        ctx.trained_takes = sorted(t.audio for t in self.profile.takes("train", include_flagged=False))
        if not train:
            raise AdaptError(
                f"profile {self.profile.path.name} has no training takes: record some with "
                f"`asr-app enroll --profile {self.profile.path.name}`"
            )
        replay_utts = [u for src in opts.replay for u in load_dataset(src)]
        random.Random(opts.seed).shuffle(replay_utts)
        speeds = (1.0, *opts.speed_perturb)
        total_utts = len(train) * len(speeds)

        def pack(utts, source: str, speed: float, done: int = 0):
            rng = (
                random.Random(f"{opts.seed}-{source}" + (f"-{speed:g}" if speed != 1.0 else ""))
                if opts.varied_windows
                else None
            )
            progress = (
                (lambda n: ctx.event("progress", ("data", done + n + 1, total_utts))) if source == "speaker" else None
            )
            # spilled to the run folder as packed: memory does not grow with the profile's hours
            store = MelStore(self.folder / WINDOWS_DIR / f"{source}-{speed:g}.f32")
            return pack_windows(utts, ctx.bundle, progress, rng, speed, store)

        speaker = pack(train, "speaker", 1.0)
        want_s = opts.replay_ratio * sum(w.audio_s for w in speaker)
        picked, total = [], 0.0
        for u in replay_utts:
            if total >= want_s:
                break
            picked.append(u)
            total += u.duration_s or 10.0  # LJSpeech does not say; the packer measures exactly
        unlabeled, unlabeled_summary = self._unlabeled()
        picked += unlabeled
        replay = pack(picked, "replay", 1.0)
        perturbed = []
        for k, speed in enumerate(opts.speed_perturb, start=1):
            perturbed += pack(train, "speaker", speed, k * len(train)) + pack(picked, "replay", speed)
        ctx.speaker, ctx.replay, ctx.perturbed = speaker, replay, perturbed
        ctx.unlabeled_texts = [u.text for u in unlabeled]
        from asr_app.adapt.data import training_text
        from asr_app.enroll.prompts import builtin_prompts

        ctx.transcripts = [training_text(u.text) for u in train]
        ctx.prompt_texts = [p.text for p in builtin_prompts()]
        ctx.data = {
            "speaker_takes": len(train),
            "speaker_windows": len(speaker),
            "speaker_minutes": round(sum(w.audio_s for w in speaker) / 60, 2),
            "replay_sets": list(opts.replay),
            "replay_windows": len(replay),
            "replay_minutes": round(sum(w.audio_s for w in replay) / 60, 2),
            "unlabeled": unlabeled_summary,
            "speed_perturb": list(opts.speed_perturb),
            "perturbed_windows": len(perturbed),
            "heldout_takes": len(self.profile.takes("heldout")),
        }
        ctx.report.data = ctx.data
        ctx.report.stages["data"] = {"wall_s": round(time.monotonic() - t0, 1)}

    def _unlabeled(self) -> tuple[list, dict | None]:
        """The teacher's transcripts of `--unlabeled` audio as utterances (transcribed once,
        kept in the run folder; see `asr_app.adapt.unlabeled`)."""
        if not self.options.unlabeled:
            return [], None
        from asr_app.adapt.unlabeled import teacher_labelled

        ctx = self.ctx
        try:
            return teacher_labelled(
                self.options.unlabeled,
                ctx.bundle,
                self.folder,
                lambda n, total: ctx.event("progress", ("unlabeled", n, total)),
                lambda path, reason: ctx.event("info", f"warning: --unlabeled: skipped ({reason})"),
                exclude=[ctx.profile.path / t.audio for t in ctx.profile.takes()],  # held-out takes never train
            )
        except FileNotFoundError as e:
            raise AdaptError(str(e)) from None

    def _calibrate(self) -> None:
        """Activation statistics and sensitivities, when a chosen method needs them
        (`asr_app.adapt.calibration`)."""
        from asr_app.adapt.calibration import calibrate_stage

        calibrate_stage(self.ctx, self.folder)

    def _save(self) -> None:
        """The compressed model, its method blocks and the run's metadata, into the profile."""
        from asr_app.compression.checkpoint import save_compressed

        ctx, opts = self.ctx, self.options
        ctx.event("stage", "save")
        name = opts.run_name()
        folder = self.profile.path / "models" / name
        # trained with the <|en|> <|transcribe|> prefix: transcribe decodes in that language
        # unless told otherwise (language detection on a compressed encoder is not trained)
        meta = {
            "base_model": opts.base,
            "language": PROFILE_LANGUAGE,
            "options": opts.to_flat(),
            "data": ctx.data,
            "params": ctx.report.params,
            "created": time.time(),
            "trained_on": {"takes": ctx.trained_takes, "unlabeled": list(opts.unlabeled)},
        }
        if opts.methods and hasattr(opts.methods[0], "target_ratio"):
            meta["target_ratio"] = opts.methods[0].target_ratio
        save_compressed(ctx.model, folder, ctx.blocks, meta)
        (ctx.tokenizer or ctx.bundle.tokenizer).save_pretrained(str(folder))
        ctx.bundle.feature_extractor.save_pretrained(str(folder))
        models = [m for m in self.profile.meta().get("models", []) if m.get("name") != name]
        removed = ctx.report.params.get("removed_share", {}).get("encoder", 0.0)
        models.append(
            {
                "name": name,
                "path": f"models/{name}",
                "base": opts.base,
                "method": "+".join(opts.method_names),
                "encoder_removed": removed,
                "created": time.time(),
            }
        )
        self.profile.update_meta(models=models)
        ctx.model_dir = folder

    def _footprint(self) -> None:
        """int8 bytes on disk and decoder ms per token of the original and the saved model
        (onnxruntime, one speaker window), into the report's `footprint`."""
        from asr_app.adapt.footprint import footprint

        ctx = self.ctx
        ctx.event("stage", "footprint")
        window = ctx.speaker[0].mel if ctx.speaker else None
        if window is None:
            return
        ctx.report.footprint = {
            "original": footprint(self.options.base, window, self.options.threads),
            "compressed": footprint(str(ctx.model_dir), window, self.options.threads),
        }

    def _report(self) -> None:
        from asr_app.outputs import atomic_write_text

        ctx = self.ctx
        ctx.event("stage", "report")
        text = json.dumps(ctx.report.to_dict(), indent=2)
        atomic_write_text(self.folder / "report.json", text)
        assert ctx.model_dir is not None, "the save stage runs before the report"
        atomic_write_text(ctx.model_dir / "report.json", text)
        from asr_app.adapt.plot import PICTURE, plot_wer_against_size

        try:
            picture = plot_wer_against_size(self.profile.path, ctx.model_dir / PICTURE)
        except (OSError, ValueError, RuntimeError) as e:  # the model and its report are saved already
            ctx.event("info", f"warning: no {PICTURE} ({e})")
            picture = None
        if picture is not None:
            ctx.event("info", f"WER against size of every model of this profile: {picture}")


def run_adapt(profile, options: AdaptOptions, on_event: Callable | None = None) -> AdaptReport:
    """Compress and adapt `options.base` to `profile`'s voice; see the module docstring.

    Returns:
        AdaptReport (also saved as report.json in the run folder and the model folder).
    Raises:
        AdaptError: no training takes or conflicting earlier run; ModelError: base model.
    """
    return Adapter(profile, options, on_event).run()
