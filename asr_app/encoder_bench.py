"""`asr-app bench --encoder`: how encoder time grows with the input, softmax against CALD.

Measures, on real log-mel, in one run on the same machine (torch backend):
- offline encoder time for inputs of 3 to 120 s, Whisper's softmax encoder and the CALD
  encoder (chunked hybrid mixer) both on the input's own length, and the log-log slope of
  time against length over 5-120 s (1 is linear, 2 quadratic);
- Whisper's padded 30-s window (what every input costs today) and the ratio of a 3-s clip
  on CALD to it;
- live: the time of each update of `StreamingEncoder` along a 20-s buffer and the size of
  its carried state, which should both stay flat.

Timings are medians over `repeats`, the engines interleaved so machine noise hits both.
The CALD encoder's speed does not depend on its trained values: a model that is not a CALD
model is converted with the defaults (fresh feature maps) for timing only.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np

LENGTHS_S = (3, 5, 10, 20, 30, 60, 120)
SLOPE_FROM_S = 5  # the range: 5 s to 120 s
FRAMES_PER_S = 100  # log-mel frames


def loglog_slope(lengths: list[float], times: list[float]) -> float:
    """Least-squares slope of log(time) against log(length)."""
    x, y = np.log(np.asarray(lengths, float)), np.log(np.asarray(times, float))
    return float(np.polyfit(x, y, 1)[0])


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def encoder_models(model):
    """(softmax encoder model, CALD model, whether the CALD model is trained) from a
    loaded model: a CALD model is timed as it is, beside a copy with one chunk over
    everything (softmax attention); any other model beside a converted copy."""
    from asr_app.compression.cald.apply import convert_encoder, hybrid_attentions, set_chunking

    if hybrid_attentions(model):
        softmax = copy.deepcopy(model)
        set_chunking(softmax, None)
        return softmax, model, True
    cald = copy.deepcopy(model)
    from asr_app.compression.cald.config import HybridPlan

    plan = HybridPlan()
    convert_encoder(
        cald, feature_map=plan.feature_map, chunk_frames=plan.chunk_frames, window_frames=plan.window_frames
    )
    return model, cald.eval(), False


def encoder_bench(
    model,
    mel: np.ndarray,
    lengths_s: tuple[float, ...] = LENGTHS_S,
    repeats: int = 5,
    live_buffer_s: float = 20.0,
    live_hops_s: tuple[float, ...] = (2.0, 0.5),
) -> dict:
    """Encoder time against input length, softmax and CALD, offline and live.

    Args:
        model: a Hugging Face Whisper model (torch), CALD or not (see `encoder_models`).
        mel: (n_mels, frames) normalised log-mel of real speech, at least max(lengths_s)
            and live_buffer_s long (100 frames a second).
        lengths_s: offline input lengths in seconds.
        repeats: timed runs per point (median reported); one warm-up run before.
        live_buffer_s: the live buffer replayed through `StreamingEncoder`.
        live_hops_s: audio per update in the live replay (2 s is one default chunk).
    Returns:
        A JSON-able dict: per length the median seconds of each encoder, the slopes over
        lengths >= 5 s, the padded-window time and the 3-s ratio, and per live hop the
        update times along the buffer with their spread and the state sizes.
    Raises:
        ValueError: mel shorter than the longest length asked for.
    """
    import torch

    from asr_app.compression.cald.encoder import StreamingEncoder, encode_frames

    need = max(int(max(max(lengths_s), live_buffer_s) * FRAMES_PER_S), 2 * model.config.max_source_positions)
    if mel.shape[1] < need:
        raise ValueError(
            f"the encoder bench needs {need / FRAMES_PER_S:.0f} s of audio, got {mel.shape[1] / 100:.1f} s"
        )
    softmax, cald, trained = encoder_models(model)
    x = torch.from_numpy(np.ascontiguousarray(mel)).to(next(model.parameters()).device)
    rows = []
    with torch.no_grad():
        window = x[:, : 2 * softmax.config.max_source_positions]  # 3,000 frames: 30 s
        padded = _median_time(lambda: softmax.model.encoder(window[None]), 1)  # warm-up
        padded = _median_time(lambda: softmax.model.encoder(window[None]), repeats)
        for length in lengths_s:
            part = x[:, : int(length * FRAMES_PER_S)]
            encode_frames(softmax, part), encode_frames(cald, part)  # warm-up
            s_times, c_times = [], []
            for _ in range(repeats):  # interleaved
                s_times.append(_median_time(lambda part=part: encode_frames(softmax, part), 1))
                c_times.append(_median_time(lambda part=part: encode_frames(cald, part), 1))
            rows.append(
                {"length_s": length, "softmax_s": float(np.median(s_times)), "cald_s": float(np.median(c_times))}
            )
        live = []
        for hop in live_hops_s:
            step = int(hop * FRAMES_PER_S)
            runs = []
            for _ in range(repeats):
                stream = StreamingEncoder(cald)
                times, states, finished = [], [], []
                for start in range(0, int(live_buffer_s * FRAMES_PER_S), step):
                    t0 = time.perf_counter()
                    stream.feed(x[:, start : start + step])
                    stream.output()
                    times.append(time.perf_counter() - t0)
                    states.append(stream.state_numel())
                    finished.append(stream.done > 0)
                runs.append(times)
            per_update = np.median(np.asarray(runs), axis=0)
            steady = per_update[1:]  # the first update also builds the empty states
            live.append(
                {
                    "hop_s": hop,
                    "update_s": [round(float(t), 5) for t in per_update],
                    "median_update_s": float(np.median(steady)),
                    "spread_vs_median": float(np.max(np.abs(steady - np.median(steady))) / np.median(steady)),
                    "last_vs_first_half": float(
                        np.median(steady[len(steady) // 2 :]) / np.median(steady[: max(1, len(steady) // 2)])
                    ),
                    "state_numel": states,
                    # the windows fill with the first finished chunk; after it the state is fixed
                    "state_fixed_after_first_chunk": len({n for n, f in zip(states, finished) if f}) == 1,
                }
            )
    fit = [r for r in rows if r["length_s"] >= SLOPE_FROM_S]
    short = min(rows, key=lambda r: r["length_s"])
    return {
        "cald_trained": trained,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "padded_window_s": padded,
        "lengths": rows,
        "slope_softmax": loglog_slope([r["length_s"] for r in fit], [r["softmax_s"] for r in fit]),
        "slope_cald": loglog_slope([r["length_s"] for r in fit], [r["cald_s"] for r in fit]),
        "short_clip_s": short["length_s"],
        "short_clip_vs_padded_window": short["cald_s"] / padded,
        "live": live,
    }


def format_report(result: dict) -> str:
    """The bench's figures as a plain-text table."""
    lines = [
        f"encoder time (median of {result['repeats']}, {result['threads']} threads), seconds:",
        f"{'input':>8} {'softmax':>9} {'CALD':>9} {'CALD/softmax':>13}",
    ]
    for r in result["lengths"]:
        lines.append(
            f"{r['length_s']:>7}s {r['softmax_s']:>9.4f} {r['cald_s']:>9.4f} {r['cald_s'] / r['softmax_s']:>13.2f}"
        )
    lines.append(
        f"log-log slope over >= {SLOPE_FROM_S} s: softmax {result['slope_softmax']:.2f}, CALD {result['slope_cald']:.2f}"
    )
    lines.append(
        f"Whisper's padded 30-s window: {result['padded_window_s']:.4f} s; a {result['short_clip_s']}-s clip on CALD "
        f"costs {result['short_clip_vs_padded_window']:.3f} of it"
    )
    for live in result["live"]:
        lines.append(
            f"live, {live['hop_s']} s per update over {len(live['update_s'])} updates: median "
            f"{live['median_update_s'] * 1000:.1f} ms, largest deviation {100 * live['spread_vs_median']:.0f}% "
            f"of it, second half / first half {live['last_vs_first_half']:.2f}; carried state "
            f"{max(live['state_numel'])} numbers, "
            + ("fixed from the first finished chunk on" if live["state_fixed_after_first_chunk"] else "GROWING")
        )
    if not result["cald_trained"]:
        lines.append("(the model is not a CALD model: a converted copy with fresh feature maps was timed)")
    return "\n".join(lines)


def speech_mel(feature_extractor, clips: list[np.ndarray], seconds: float) -> np.ndarray:
    """Normalised log-mel of `seconds` of speech: the clips joined (repeated if short).

    Raises:
        ValueError: no audio in the clips.
    """
    from asr_app.audio import log_mel_content

    audio = np.concatenate([np.asarray(c, np.float32) for c in clips]) if clips else np.zeros(0, np.float32)
    if audio.size == 0:
        raise ValueError("the encoder bench needs speech: give a file or dataset with audio in it")
    need = int(seconds * 16000) + 160
    audio = np.tile(audio, math.ceil(need / audio.size))[:need]
    return log_mel_content(feature_extractor, audio)


__all__ = ["LENGTHS_S", "encoder_bench", "encoder_models", "format_report", "loglog_slope", "speech_mel"]
