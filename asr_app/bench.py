"""`bench`: real-time factor, peak memory and load time, against faster-whisper in one run.

Each engine runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own.
Both engines decode the same audio with the same weights, threads and decoding settings
(greedy unless told, timestamps on, temperature fallback, no VAD, no previous-text
conditioning). A benchmark reports; it fails nothing.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import resource
import sys
import time
from dataclasses import asdict, dataclass, field

from asr_app.errors import install_hint


@dataclass(frozen=True)
class BenchConfig:
    """What to measure.

    Attributes:
        model: model name or folder (same weights for every engine).
        audio: [(id, path, reference text or None)].
        threads: CPU threads for every engine.
        beam_size: 1 is greedy.
        engines: ("asr-app", "asr-app:MODEL", "asr-app/onnx-int8", "asr-app/onnx-int8:MODEL",
            "faster-whisper:float32", "faster-whisper:int8", ...); "asr-app:MODEL" runs asr-app
            on another model (e.g. the base of a compressed one); "/onnx-Q" on onnxruntime with
            the model's export at quantization Q (int8, fp16, none), torch otherwise.
        device: "cpu" or "cuda".
        reference_model: the model faster-whisper runs (default: `model`); for a compressed
            model, its base.
        whole_command: also time each engine as a user runs it: one whole process from
            start to exit (imports, model load, reading audio, VAD on, writing transcripts),
            its wall time and peak memory (see `run_command`).
    """

    model: str
    audio: tuple[tuple[str, str, str | None], ...]
    threads: int = 2
    beam_size: int = 1
    engines: tuple[str, ...] = ("asr-app",)
    device: str = "cpu"
    reference_model: str | None = None
    whole_command: bool = True


@dataclass
class EngineResult:
    """One engine's figures. rtf = decode_s / audio_s; wer in percent (None without references).

    command_wall_s, command_peak_mb: the whole command (see `BenchConfig.whole_command`),
    None when not measured; command_error: why it failed, if it did.
    """

    engine: str
    load_s: float = 0.0
    audio_s: float = 0.0
    decode_s: float = 0.0
    peak_rss_mb: float = 0.0
    wer: float | None = None
    utterances: int = 0
    error: str | None = None
    hypotheses: dict = field(default_factory=dict)
    command_wall_s: float | None = None
    command_peak_mb: float | None = None
    command_error: str | None = None

    @property
    def rtf(self) -> float:
        return self.decode_s / self.audio_s if self.audio_s else 0.0


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux: VmHWM from /proc/self/status, the high-water mark of this process's own memory
    map. ru_maxrss is not used there: a spawned engine process can report its parent's
    (larger) peak, which made every engine show the same figure once the parent had
    exported a model.
    """
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def parse_engine(engine: str) -> tuple[str, str | None, str, str]:
    """ "asr-app/onnx-int8:tiny.en" -> ("asr-app", "tiny.en", "onnx", "int8"); torch engines
    give backend "torch" (and quantize "none")."""
    head, _, model = engine.partition(":")
    name, _, variant = head.partition("/")
    if variant.startswith("onnx-"):
        return name, model or None, "onnx", variant[len("onnx-") :]
    return name, model or None, "torch", "none"


def _run_asr_app(cfg: BenchConfig, engine: str) -> EngineResult:
    from asr_app.audio import load_audio
    from asr_app.decoding import DecodingOptions
    from asr_app.transcribe import TranscribeOptions, Transcriber

    _, model, backend, quantize = parse_engine(engine)
    res = EngineResult(engine)
    t0 = time.perf_counter()
    tr = Transcriber(
        TranscribeOptions(
            model=model or cfg.model,
            device=cfg.device,
            threads=cfg.threads,
            vad=False,
            backend=backend,
            quantize=quantize if backend == "onnx" else "int8",
            decoding=DecodingOptions(beam_size=cfg.beam_size),
        )
    )
    res.load_s = time.perf_counter() - t0
    for uid, path, _ in cfg.audio:
        audio = load_audio(path)
        t = tr.transcribe_audio(audio)
        res.decode_s += t.decode_time_s
        res.audio_s += t.duration_s
        res.hypotheses[uid] = t.text
    return res


def _run_faster_whisper(cfg: BenchConfig, compute_type: str) -> EngineResult:
    from faster_whisper import WhisperModel

    from asr_app.audio import load_audio
    from asr_app.models import find_model

    res = EngineResult(f"faster-whisper:{compute_type}")
    source = find_model(cfg.reference_model or cfg.model)
    if source.kind != "ct2" or len(source.model_files) != 1:
        res.error = "faster-whisper needs a single-file CTranslate2 model folder (tiny.en or a CT2 folder)"
        return res
    t0 = time.perf_counter()
    model = WhisperModel(source.location, device=cfg.device, compute_type=compute_type, cpu_threads=cfg.threads)
    res.load_s = time.perf_counter() - t0
    for uid, path, _ in cfg.audio:
        audio = load_audio(path)
        t1 = time.perf_counter()
        segments, info = model.transcribe(
            audio,
            beam_size=cfg.beam_size,
            language="en" if not model.model.is_multilingual else None,
            vad_filter=False,
            condition_on_previous_text=False,
        )
        text = "".join(s.text for s in segments).strip()
        res.decode_s += time.perf_counter() - t1
        res.audio_s += len(audio) / 16000
        res.hypotheses[uid] = text
    return res


def _engine_main(cfg: BenchConfig, engine: str) -> EngineResult:
    """Entry point of an engine subprocess."""
    from asr_app.models import quiet_transformers_logging

    quiet_transformers_logging()
    try:
        if engine.startswith("asr-app"):
            res = _run_asr_app(cfg, engine)
        elif engine.startswith("faster-whisper"):
            res = _run_faster_whisper(cfg, engine.partition(":")[2] or "float32")
        else:
            res = EngineResult(engine, error=f"unknown engine {engine!r}")
    except ImportError as e:
        res = EngineResult(engine, error=f"not installed ({e.name}); {install_hint('bench')}")
    except Exception as e:  # a benchmark reports, it fails nothing
        res = EngineResult(engine, error=f"{type(e).__name__}: {e}")
    res.peak_rss_mb = _peak_rss_mb()
    res.utterances = len(res.hypotheses)
    return res


# What a faster-whisper user writes to transcribe files: load once, VAD on, text out.
_FASTER_WHISPER_COMMAND = """
import sys
from pathlib import Path
from faster_whisper import WhisperModel
model_dir, compute_type, threads, beam, device, out = sys.argv[1:7]
model = WhisperModel(model_dir, device=device, compute_type=compute_type, cpu_threads=int(threads))
for f in sys.argv[7:]:
    segments, info = model.transcribe(f, beam_size=int(beam), vad_filter=True,
                                      language=None if model.model.is_multilingual else "en")
    (Path(out) / (Path(f).stem + ".txt")).write_text("".join(s.text for s in segments).strip() + "\\n")
"""


def run_command(argv: list[str]) -> tuple[float, float, int, str]:
    """Run one process to its end.

    Returns:
        (wall seconds from start to exit, the process's peak resident memory in MB (its
        ru_maxrss from wait4), exit code, the tail of its stderr).
    """
    import os
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode("utf-8", "replace")
    rss = usage.ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else usage.ru_maxrss / 1024
    return wall, rss, proc.returncode, tail


def _command_argv(cfg: BenchConfig, engine: str, out_dir: str) -> list[str] | None:
    """The command line a user would run for `engine` (None: the engine has no such command)."""
    files = [path for _, path, _ in cfg.audio]
    name, model, backend, quantize = parse_engine(engine)
    if name == "asr-app":
        argv = [
            sys.executable,
            "-m",
            "asr_app",
            "transcribe",
            *files,
            "--output-dir",
            out_dir,
            "--quiet",
            "--overwrite",
            "--threads",
            str(cfg.threads),
            "--model",
            model or cfg.model,
            "--backend",
            backend,
            "--beam-size",
            str(cfg.beam_size),
            "--device",
            cfg.device,
        ]
        return argv + (["--quantize", quantize] if backend == "onnx" else [])
    if name == "faster-whisper":
        from asr_app.models import find_model

        source = find_model(cfg.reference_model or cfg.model)
        if source.kind != "ct2" or len(source.model_files) != 1:
            return None
        return [
            sys.executable,
            "-c",
            _FASTER_WHISPER_COMMAND,
            source.location,
            engine.partition(":")[2] or "float32",
            str(cfg.threads),
            str(cfg.beam_size),
            cfg.device,
            out_dir,
            *files,
        ]
    return None


def _measure_command(cfg: BenchConfig, res: EngineResult) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="asr-bench-") as out:
        argv = _command_argv(cfg, res.engine, out)
        if argv is None:
            return
        wall, rss, code, tail = run_command(argv)
    if code != 0:
        res.command_error = f"exit code {code}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"
        return
    res.command_wall_s, res.command_peak_mb = round(wall, 3), round(rss, 1)


def run_bench(cfg: BenchConfig, on_progress=None) -> list[EngineResult]:
    """Run every engine in its own process, in order; score WER where references exist.

    on_progress: told the steps of a first-use export (done here, outside the measured
    processes; see `asr_app.models.onnx_model_dir`)."""
    from asr_app.models import onnx_model_dir
    from asr_app.wer import corpus_wer

    results = []
    ctx = multiprocessing.get_context("spawn")
    for engine in cfg.engines:
        name, model, backend, quantize = parse_engine(engine)
        if name == "asr-app" and backend == "onnx":  # export outside the measured process
            onnx_model_dir(model or cfg.model, quantize, on_progress=on_progress)
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            res = pool.submit(_engine_main, cfg, engine).result()
        if cfg.whole_command and not res.error:
            _measure_command(cfg, res)
        refs = [(uid, ref) for uid, _, ref in cfg.audio if ref is not None and uid in res.hypotheses]
        if refs and not res.error:
            res.wer = 100 * corpus_wer([r for _, r in refs], [res.hypotheses[u] for u, _ in refs]).wer
        results.append(res)
    return results


def results_to_dict(cfg: BenchConfig, results: list[EngineResult]) -> dict:
    """JSON-ready report: config, each engine's figures, ratios against the first engine."""
    base = results[0]
    rows = []
    for r in results:
        d = asdict(r)
        d["rtf"] = round(r.rtf, 4)
        if not r.error and not base.error and r is not base and r.rtf:
            d["rtf_ratio_vs_first"] = round(base.rtf / r.rtf, 3)
            d["peak_rss_ratio_vs_first"] = round(base.peak_rss_mb / r.peak_rss_mb, 3)
            if base.command_wall_s and r.command_wall_s:
                d["command_wall_ratio_vs_first"] = round(base.command_wall_s / r.command_wall_s, 3)
                d["command_peak_ratio_vs_first"] = round(base.command_peak_mb / r.command_peak_mb, 3)
        rows.append(d)
    return {
        "model": cfg.model,
        "threads": cfg.threads,
        "beam_size": cfg.beam_size,
        "utterances": len(cfg.audio),
        "engines": rows,
    }
