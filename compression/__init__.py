"""Compression methods for Whisper, one folder per method (AdaPTwin today; FVT and CALD next).

The top level holds what every method shares: `lora` (LoRA adapters through peft),
`distill` (layer-wise and logit/KL distillation loops), `surgery` (module lookup and
key-by-key checks), `calibrate` (activation statistics and sensitivities), `checkpoint`
(the saved format, a list of method blocks), `interface` (the `Method` protocol and the
`Stage`s a method adds to adaptation) and `methods` (the registry `METHODS`).

Imports torch, transformers and peft, and may import `asr_app.kernels`; never the app,
Textual or sounddevice (checked by tests/test_layering.py).
"""


def __getattr__(name: str):
    if name == "METHODS":  # the registry with the built-in methods in it (see `methods.all_methods`)
        from asr_app.compression.methods import all_methods

        return all_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
