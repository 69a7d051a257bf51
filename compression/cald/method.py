"""CALD as a `compression.methods.Method`: its saved config (the `HybridPlan`), how a saved
model's encoder is rebuilt, and its adaptation stages.

Source: He and Garner, "Joint Fine-tuning and Conversion of Pretrained Speech and Language
Models towards Linear Complexity" (CALD, arXiv 2410.06846).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from asr_app.compression.cald.config import METHOD, METHOD_VERSION, HybridPlan
from asr_app.compression.cald.options import CaldOptions
from asr_app.compression.interface import Stage

if TYPE_CHECKING:
    from torch import nn


class Cald:
    """The CALD method (see `compression.methods.Method`)."""

    name = METHOD
    version = METHOD_VERSION
    config_class = HybridPlan
    options_class = CaldOptions

    def build_structure(self, model: nn.Module, block: dict) -> None:
        """Convert a dense model's encoder as the block says (weights loaded afterwards).

        Raises:
            ValueError: a block with an unknown feature map or bad chunking.
        """
        from asr_app.compression.cald.apply import convert_encoder

        plan = HybridPlan.from_dict(block)
        convert_encoder(
            model, feature_map=plan.feature_map, chunk_frames=plan.chunk_frames, window_frames=plan.window_frames
        )

    def stages(self, options: CaldOptions) -> list[Stage]:
        """`convert` then `transfer` (attention transfer); the layer-wise distillation and
        fine-tuning that follow are the pipeline's shared stages."""
        from asr_app.compression.cald.stages import convert_stage, resume_train_chunks, transfer_stage

        def resume(ctx, done: dict) -> None:
            resume_train_chunks(ctx, options)

        return [
            Stage("convert", lambda ctx: convert_stage(ctx, options), rebuild_on_resume=True, resume=resume),
            Stage("transfer", lambda ctx: transfer_stage(ctx, options), resume=resume),
        ]

    def onnx_emitters(self) -> dict[type, Callable]:
        """The emitter of HybridSelfAttention (offline, whole window)."""
        from asr_app.compression.cald.onnx import EMITTERS

        return dict(EMITTERS)


CALD = Cald()
