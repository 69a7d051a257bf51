"""The adapt report's picture: WER against whole-model size, every model of the profile and
their originals as points."""

from __future__ import annotations

import json


def _report(model_dir, base, original_params, params, wer):
    return {
        "options": {"base": base},
        "model_dir": str(model_dir),
        "params": {"original": {"model": original_params}, "compressed": {"model": params}},
        "wer": {name: {"set": f"{name}-set", **row} for name, row in wer.items()},
    }


def test_points_hold_each_model_once_and_each_original_once_per_set(tmp_path):
    from asr_app.adapt.plot import PICTURE, measured_points, plot_wer_against_size

    profile = tmp_path / "alice"
    reports = [
        _report("m/tiny.en-fvt8000-fvt", "tiny.en", 37.76e6, 21.5e6, {"heldout": {"original": 3.8, "compressed": 9.0}}),
        _report("m/tiny.en-keep0.85", "tiny.en", 37.76e6, 36.5e6, {"heldout": {"original": 3.8, "compressed": 4.0}}),
        _report("m/base-keep0.85", "base", 72.6e6, 70.0e6, {"general": {"original": 5.0, "compressed": 5.5}}),
        # a hub id as the base: its name has a "-" like a run's, and is still an original
        _report(
            "m/whisper-tiny.en-keep0.85", "openai/whisper-tiny.en", 37.76e6, 36.5e6, {"general": {"original": 5.2}}
        ),
    ]
    points = measured_points(reports)
    assert points[("heldout", "heldout-set")] == [
        ("tiny.en", 37.76, 3.8, True),
        ("tiny.en-fvt8000-fvt", 21.5, 9.0, False),
        ("tiny.en-keep0.85", 36.5, 4.0, False),
    ]
    assert points[("general", "general-set")] == [
        ("base", 72.6, 5.0, True),
        ("base-keep0.85", 70.0, 5.5, False),
        ("openai/whisper-tiny.en", 37.76, 5.2, True),
    ]

    for r in reports:
        folder = profile / "models" / r["model_dir"].split("/")[-1]
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps(r))
    (profile / "models" / "half-written").mkdir()
    (profile / "models" / "half-written" / "report.json").write_text("{")
    out = plot_wer_against_size(profile, tmp_path / PICTURE)
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / (PICTURE + ".tmp")).exists()  # written whole, then renamed
    assert plot_wer_against_size(tmp_path / "empty", tmp_path / "none.png") is None
