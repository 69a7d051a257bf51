"""The compression-method interface and the registry of methods.

A method (AdaPTwin, FVT, CALD) is one object that says:
- `name`, `version`: what a compressed model's config.json records in its block;
- `config_class`: a dataclass with `to_dict()` / `from_dict(d)`, the method's saved
  settings (for AdaPTwin: the `CompressionPlan`, ranks per layer and head);
- `options_class`: a frozen dataclass of its adaptation options (defaults = what
  `asr-app adapt` does), with a `method` class attribute naming the method, a
  `run_name()` giving its part of the run folder's name, and the properties
  `needs_activation_stats` and `compresses_decoder` the pipeline reads;
- `stages(options)`: the named stages it adds to adaptation, run in order by
  `asr_app.adapt`'s pipeline and resumed by name (`"<method>.<stage>"`);
- `build_structure(model, block)`: rebuild its layers on a dense model built from the
  config, before the saved weights are loaded (key-by-key strict);
- `onnx_emitters()`: for each layer type it introduces, the function that writes that
  layer into an ONNX graph (called by `asr_app.onnx`'s graph walk with the layer, the graph
  builder and the input name).

`Method` and `Stage` are defined in `compression.interface`. Methods are applied in order; config.json's compression block lists them:
    {"methods": [{"method": "adaptwin", "version": 1, "plan": {...}}, ...], ...metadata}
"""

from __future__ import annotations

from asr_app.compression.interface import Method, Stage

METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add `method` to `METHODS` under its name (a later registration of the same name
    replaces it: tests register test-only methods). Returns the method."""
    if not isinstance(method, Method):
        raise TypeError(f"{method!r} does not implement compression.methods.Method")
    METHODS[method.name] = method
    return method


def get_method(name: str, version: int | None = None) -> Method:
    """The registered method called `name`, checked against a saved `version`.

    Raises:
        ValueError: no such method, or a saved version this code does not read (names
            what to do).
    """
    _register_builtin()
    method = METHODS.get(name)
    if method is None:
        raise ValueError(
            f"unknown compression method {name!r} (known: {', '.join(sorted(METHODS)) or 'none'}); "
            "upgrade asr-app or re-run adapt"
        )
    if version is not None and version != method.version:
        raise ValueError(
            f"compression {name} v{version} is not {name} v{method.version}; upgrade asr-app or re-run adapt"
        )
    return method


def _register_builtin() -> None:
    """Register the methods shipped with the app (imported on first use, not at import)."""
    if "adaptwin" not in METHODS:
        from asr_app.compression.adaptwin.method import ADAPTWIN

        register(ADAPTWIN)
    if "fvt" not in METHODS:
        from asr_app.compression.fvt.method import FVT

        register(FVT)
    if "cald" not in METHODS:
        from asr_app.compression.cald.method import CALD

        register(CALD)


def all_methods() -> dict[str, Method]:
    """`METHODS` with the built-in methods registered."""
    _register_builtin()
    return METHODS


__all__ = ["METHODS", "Method", "Stage", "all_methods", "get_method", "register"]
