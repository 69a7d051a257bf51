"""The calibrate stage of an adaptation: the original model's activation statistics on the
speaker's windows (and the replay share of them) and the sensitivities that weigh each
site's error in rank allocation: injected noise at the encoder output
(`compression.calibrate.measure_sensitivity`) or the decoder loss's squared gradients
(`compression.fisher.fisher_sensitivity`). Saved in the run folder: a resumed run reads
them back."""

from __future__ import annotations

import time
from pathlib import Path

from asr_app.adapt.data import evenly
from asr_app.adapt.state import save_tensors


def calibration_mels(ctx) -> list:
    """The calibration windows: (1, n_mels, 3000) float32 log-mel tensors, the speaker's
    first (evenly spaced over the takes), then the replay share (`calibration_replay_share`)."""
    import torch

    opts = ctx.options
    n_replay = round(opts.calibration_windows * opts.calibration_replay_share) if ctx.replay else 0
    mels = [torch.from_numpy(w.mel[None]) for w in evenly(ctx.speaker, opts.calibration_windows - n_replay)]
    return mels + [torch.from_numpy(w.mel[None]) for w in evenly(ctx.replay, n_replay)]


def calibrate_stage(ctx, folder: Path) -> None:
    """Fill `ctx.stats` and `ctx.gains` when some chosen method needs activation statistics.

    Args:
        ctx: the pipeline's `Context` (teacher, speaker and replay windows, options);
        folder: the run folder (stats.safetensors goes there).
    """
    import torch
    from safetensors.torch import load_file

    from asr_app.compression.calibrate import ActivationStats, collect_activation_stats, measure_sensitivity

    opts = ctx.options
    if not any(m.needs_activation_stats for m in opts.methods):
        return
    path = folder / "stats.safetensors"
    done = ctx.done("calibrate")
    ctx.event("stage", "calibrate")
    if done and path.is_file():
        ctx.report.stages["calibrate"] = done
        ctx.stats, ctx.gains = ActivationStats.from_state_dict(load_file(str(path))), done["gains"]
        return
    t0 = time.monotonic()
    mels = calibration_mels(ctx)
    probe = torch.cat(mels[: min(2, len(mels))])  # sensitivity is measured on the speaker (first)
    heads = any(getattr(m, "needs_head_stats", False) for m in opts.methods)
    stats = collect_activation_stats(
        ctx.teacher, mels, lambda b: ctx.event("progress", ("calibrate", b + 1, len(mels))), heads=heads
    )
    if opts.sensitivity == "fisher":  # the decoder's loss on the speaker's own transcripts
        from asr_app.compression.fisher import fisher_sensitivity

        windows = evenly(ctx.speaker, opts.sensitivity_windows)
        gains = fisher_sensitivity(
            ctx.teacher,
            ((torch.from_numpy(w.mel[None]), torch.tensor([w.labels])) for w in windows),
            lambda b: ctx.event("progress", ("sensitivity", b + 1, len(windows))),
        )
    else:
        gains = measure_sensitivity(ctx.teacher, probe, seed=opts.seed)
    save_tensors(stats.state_dict(), path)
    result = {"wall_s": round(time.monotonic() - t0, 1), "positions": stats.positions, "gains": gains}
    ctx.finish("calibrate", result)
    ctx.report.stages["calibrate"] = result
    ctx.stats, ctx.gains = stats, gains
