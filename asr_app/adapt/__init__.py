"""`asr-app adapt`: compress and adapt Whisper to one speaker's enrollment profile.

A pipeline of named stages (`pipeline`): the shared data and calibrate stages, each chosen
compression method's stages (`asr_app.compression.METHODS`; AdaPTwin by default), the
shared recovery (LoRA, layer-wise distillation, fine-tuning), save, evaluate and report.
Options: `AdaptOptions` (shared) holding one options dataclass per method.
Method: AdaPTwin (Biju, Sriram, Pilanci 2024); see compression/adaptwin/README.md.
"""

from asr_app.adapt.data import PROFILE_LANGUAGE, WINDOW_FILL_S, Window, pack_windows, speed_perturb, training_text
from asr_app.adapt.options import AdaptError, AdaptOptions, method_options
from asr_app.adapt.pipeline import Adapter, Context, run_adapt
from asr_app.adapt.report import WER_LOSS_LIMIT, AdaptReport

__all__ = [
    "AdaptError",
    "AdaptOptions",
    "AdaptReport",
    "Adapter",
    "Context",
    "PROFILE_LANGUAGE",
    "WER_LOSS_LIMIT",
    "WINDOW_FILL_S",
    "Window",
    "method_options",
    "pack_windows",
    "run_adapt",
    "speed_perturb",
    "training_text",
]
