"""The adaptation pipeline with a test-only compression method on a synthetic Whisper: the
method's stages run, a resumed run skips the finished ones, save and load round-trip, and
the ONNX export writes the method's layer with the method's emitter."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from asr_app.compression.interface import Stage
from tests.conftest import TEST_THREADS


class ScaledLinear(nn.Module):
    """A linear layer followed by a fixed scale: the test method's own layer type."""

    def __init__(self, inner: nn.Linear, scale: float):
        super().__init__()
        self.inner = inner
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x):
        return self.inner(x) * self.scale


def emit_scaled_linear(g, module: ScaledLinear, x: str, hint: str) -> str:
    EMITTED.append(hint)
    s = float(module.scale)
    w = module.inner.weight.detach().numpy() * s
    b = module.inner.bias.detach().numpy() * s
    return g.linear(x, w, b, hint)


EMITTED: list[str] = []
RUNS: list[str] = []


@dataclass(frozen=True)
class ScaleOptions:
    method = "scale_test"
    scale: float = 0.5

    needs_activation_stats = False
    compresses_decoder = False

    def run_name(self) -> str:
        return f"-scale{self.scale:g}"


def _wrap(model, scale):
    for layer in model.model.encoder.layers:
        if not isinstance(layer.fc1, ScaledLinear):
            layer.fc1 = ScaledLinear(layer.fc1, scale)


class ScaleMethod:
    """Wraps every encoder fc1 in a ScaledLinear."""

    name = "scale_test"
    version = 1
    config_class = dict
    options_class = ScaleOptions

    def stages(self, options):
        def scale(ctx):
            import copy

            RUNS.append("scale")
            ctx.model = copy.deepcopy(ctx.teacher)
            _wrap(ctx.model, options.scale)
            ctx.blocks.append({"method": self.name, "version": self.version, "scale": options.scale})
            return {"wall_s": 0.0}

        return [Stage("scale", scale)]

    def build_structure(self, model, block):
        _wrap(model, block["scale"])

    def onnx_emitters(self):
        return {ScaledLinear: emit_scaled_linear}


@pytest.fixture
def scale_method():
    from asr_app.compression import methods

    methods.register(ScaleMethod())
    yield
    methods.METHODS.pop("scale_test", None)


def _small_run(base, **changes):
    """Options of a quick adaptation of the synthetic Whisper with the test method."""
    from asr_app.adapt import AdaptOptions

    values = dict(
        base=str(base),
        methods=(ScaleOptions(0.5),),
        layerwise_epochs=0.5,
        batch_size=2,
        lora_rank=2,
        control=False,
        speed_perturb=(),
        threads=TEST_THREADS,
    )
    return AdaptOptions(**{**values, **changes})


def _noise_profile(tmp_path, n=11):
    from asr_app.enroll.profile import Profile

    rng = np.random.default_rng(0)
    profile = Profile.create_or_open(tmp_path / "spk", speaker="test")
    for i in range(n):
        profile.add_take(
            (0.05 * rng.standard_normal(16000 * 2)).astype(np.float32), "hello there", f"p{i}", 1, source="import"
        )
    return profile


def test_a_registered_method_runs_resumes_saves_loads_and_exports(
    synthetic_whisper, scale_method, tmp_path, monkeypatch
):
    from asr_app.adapt import Adapter, run_adapt
    from asr_app.compression.checkpoint import compression_block
    from asr_app.models import load_model

    monkeypatch.setenv("ASR_APP_DATA_DIR", str(tmp_path / "data"))
    # the random model's text fails every fallback test: evaluate it greedily only, or the
    # evaluate stage samples 5 x 224 tokens at each of 6 temperatures per window
    import asr_app.decoding

    greedy = functools.partial(asr_app.decoding.DecodingOptions, temperatures=(0.0,))
    monkeypatch.setattr(asr_app.decoding, "DecodingOptions", greedy)
    RUNS.clear()
    EMITTED.clear()
    profile = _noise_profile(tmp_path)
    opts = _small_run(synthetic_whisper, stages=("layerwise",))
    assert Adapter(profile, opts).stage_names() == [
        "data",
        "calibrate",
        "scale_test.scale",
        "layerwise",
        "finetune",
        "save",
        "control",
        "evaluate",
        "report",
    ]

    def interrupt(kind, payload):
        if kind == "stage" and payload == "save":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_adapt(profile, opts, interrupt)
    assert RUNS == ["scale"]
    stages = []
    report = run_adapt(profile, opts, lambda kind, payload: stages.append(payload) if kind == "stage" else None)
    assert RUNS == ["scale"]  # the finished method stage was not run again
    assert "scale_test.scale" in stages and "layerwise" in stages
    assert report.methods == [{"method": "scale_test", "version": 1, "scale": 0.5}]
    folder = report.model_dir
    assert compression_block(folder)["methods"] == report.methods

    reloaded = load_model(folder)
    assert all(
        isinstance(layer.fc1, ScaledLinear) and float(layer.fc1.scale) == 0.5
        for layer in reloaded.model.model.encoder.layers
    )
    from safetensors.torch import load_file

    trained = load_file(str(profile.path / "adapt" / opts.run_name() / "layerwise.safetensors"))
    state = reloaded.model.state_dict()
    assert set(trained) <= set(state) and all(torch.equal(state[k], v) for k, v in trained.items())

    import onnxruntime as ort

    onnx = load_model(folder, backend="onnx", quantize="none")
    assert onnx.backend == "onnx" and len(EMITTED) == 2 and all(h.endswith("fc1") for h in EMITTED), EMITTED
    export = Path(onnx.path)
    assert json.loads((export / "config.json").read_text())["compression"]["methods"] == report.methods
    mel = torch.randn(1, 80, 3000)
    session = ort.InferenceSession(str(export / "encoder.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: mel.numpy()})[0]
    with torch.no_grad():
        want = reloaded.model.model.encoder(mel).last_hidden_state.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_refresh_goes_on_from_the_saved_model_with_what_was_added(
    synthetic_whisper, scale_method, tmp_path, monkeypatch
):
    """`--refresh`: nothing new is refused; after new takes, the refresh keeps the saved
    model's options, skips calibration and the method's stage, starts recovery from the
    saved weights for its share of a full run's steps, resumes in the same folder after an
    interruption, and saves a new model that --profile then uses."""
    from asr_app.adapt import Adapter, run_adapt
    from asr_app.adapt.options import AdaptError
    from asr_app.adapt.refresh import refresh_options, source_model
    from asr_app.compression.checkpoint import load_compressed

    monkeypatch.setenv("ASR_APP_DATA_DIR", str(tmp_path / "data"))
    import asr_app.decoding

    greedy = functools.partial(asr_app.decoding.DecodingOptions, temperatures=(0.0,))
    monkeypatch.setattr(asr_app.decoding, "DecodingOptions", greedy)
    RUNS.clear()
    profile = _noise_profile(tmp_path)
    opts = _small_run(synthetic_whisper, finetune_epochs=0.5)
    run_adapt(profile, opts)
    assert RUNS == ["scale"]
    model = source_model(profile)
    assert model["name"] == opts.run_name()
    with pytest.raises(AdaptError, match="nothing was added"):
        refresh_options(profile, model, {})

    rng = np.random.default_rng(1)
    for i in range(4):
        profile.add_take((0.05 * rng.standard_normal(16000 * 2)).astype(np.float32), "new words", f"n{i}", 2)
    refresh, new = refresh_options(profile, model, {"threads": TEST_THREADS})
    assert len(new["takes"]) == 4 and new["live_sessions"] == []
    assert refresh.refresh_from == model["name"] and refresh.methods == opts.methods
    assert refresh.run_name() == f"{opts.run_name()}-refresh{refresh.refresh_key}"
    new_s, old_s = new["takes_s"], new["old_s"]
    assert refresh.refresh_share == pytest.approx(min(1.0, 2 * new_s / (new_s + old_s)), abs=1e-3)
    adapter = Adapter(profile, refresh)
    assert adapter.stage_names() == ["data", "layerwise", "finetune", "save", "evaluate", "report"]

    def interrupt(kind, payload):
        if kind == "stage" and payload == "layerwise":
            raise KeyboardInterrupt

    adapter.ctx.event = interrupt
    with pytest.raises(KeyboardInterrupt):
        adapter.run()
    saved, _ = load_compressed(profile.path / model["path"])
    loaded = adapter.ctx.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.state_dict().items())  # from the saved weights

    report = run_adapt(profile, refresh)
    assert RUNS == ["scale"]  # the method's stage did not run again
    assert report.data["refresh"] == {"from": model["name"], "step_share": refresh.refresh_share}
    assert 0 < refresh.refresh_share < 1
    windows = report.data["speaker_windows"] + report.data["replay_windows"]
    for stage in ("layerwise", "finetune"):
        want = max(1, int(round(0.5 * refresh.refresh_share * windows / 2)))
        assert report.stages[stage]["planned_steps"] == want, stage
    assert "before_refresh" in report.wer["heldout"]
    assert source_model(profile)["name"] == refresh.run_name()  # --profile now loads the refreshed model
    with pytest.raises(AdaptError, match="nothing was added"):
        refresh_options(profile, source_model(profile), {})


def test_refresh_of_a_profile_without_a_model_says_what_to_run(tmp_path, capsys):
    from asr_app.cli import main

    profile = _noise_profile(tmp_path, n=2)
    assert main(["adapt", "--profile-dir", str(profile.path), "--refresh", "--device", "cpu"]) != 0
    assert f"no adapted model to refresh: run `asr-app adapt --profile {profile.path.name}`" in capsys.readouterr().err
    # flags the refresh would not apply are refused, named
    assert main(["adapt", "--profile-dir", str(profile.path), "--refresh", "--target-ratio", "0.55"]) != 0
    assert "--target-ratio would not apply" in capsys.readouterr().err


def test_progressive_cuts_recover_between_cuts_resume_and_save_the_last_plan(synthetic_whisper, tmp_path, monkeypatch):
    """`--progressive` to 30% removed (the synthetic model's positions and convolutions
    leave no room for 45%): cuts at 15% and 30% with a layer-wise recovery and fresh
    statistics between them; no rank grows; an interrupted run resumes after the finished
    recovery; the saved model is the last cut's, within its budget."""
    from asr_app.adapt import Adapter, run_adapt
    from asr_app.compression.adaptwin.options import AdaptwinOptions
    from asr_app.compression.checkpoint import compression_block
    from asr_app.models import load_model

    monkeypatch.setenv("ASR_APP_DATA_DIR", str(tmp_path / "data"))
    import asr_app.decoding

    greedy = functools.partial(asr_app.decoding.DecodingOptions, temperatures=(0.0,))
    monkeypatch.setattr(asr_app.decoding, "DecodingOptions", greedy)
    profile = _noise_profile(tmp_path)
    method = AdaptwinOptions(
        target_ratio=0.7,
        progressive=True,
        twin_stats="head",
        centre=True,
        query_bias_fit="weighted",
        decoder_keep=0.8,  # factored once by the first cut, carried through the later ones
    )
    opts = _small_run(synthetic_whisper, methods=(method,), stages=("layerwise",), calibration_windows=2)
    assert opts.method("adaptwin").schedule == (0.85, 0.7)
    assert replace(opts.method("adaptwin"), target_ratio=0.55).schedule == (0.85, 0.7, 0.55)
    names = Adapter(profile, opts).stage_names()
    cuts = ["adaptwin.factor", "adaptwin.recover1", "adaptwin.cut1"]
    assert names[names.index("calibrate") + 1 : names.index("layerwise")] == cuts

    def interrupt(kind, payload):
        if kind == "stage" and payload == "adaptwin.cut1":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_adapt(profile, opts, interrupt)
    events = []
    report = run_adapt(profile, opts, lambda kind, payload: events.append((kind, payload)))
    trained = {p[0] for k, p in events if k == "progress" and len(p) == 4}
    assert trained == {"layerwise"}  # recover1 finished before: not trained again
    state = Adapter(profile, opts).state
    plans = [state.done(k)["plan"] for k in ("adaptwin.factor", "adaptwin.cut1")]
    for before, after in zip(plans, plans[1:]):
        for i, lp in after["layers"].items():
            was = before["layers"][i]
            assert all(a <= b for a, b in zip(lp["qk"] + lp["vo"], was["qk"] + was["vo"]))
    assert plans[-1]["centre"] and plans[-1]["head_stats"] and plans[-1]["weighted_bias"]
    assert plans[-1]["decoder"] == plans[0]["decoder"] and plans[0]["decoder"]
    assert state.done("adaptwin.recover1")["planned_steps"] == report.stages["layerwise"]["planned_steps"]
    assert 0.3 - 1e-4 <= report.params["removed_share"]["encoder"] < 0.33  # kept <= 0.7, close to it
    assert compression_block(report.model_dir)["methods"][0]["plan"] == plans[-1]
    reloaded = load_model(report.model_dir)
    mel = torch.randn(1, 80, 3000)
    with torch.no_grad():
        reloaded.model.model.encoder(mel)
