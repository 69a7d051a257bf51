"""AdaPTwin as a `compression.methods.Method`: its saved config (the `CompressionPlan`),
how a saved model's structure is rebuilt, its ONNX emitters and its adaptation stages.

Source: Biju, Sriram, Pilanci, "AdaPTwin: Low-Cost Adaptive Compression of Product Twins in
Transformers" (2024).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from asr_app.compression.adaptwin.config import METHOD, METHOD_VERSION, CompressionPlan, method_block
from asr_app.compression.adaptwin.options import AdaptwinOptions
from asr_app.compression.interface import Stage

if TYPE_CHECKING:
    from torch import nn


class AdaPTwin:
    """The AdaPTwin method (see `compression.methods.Method`)."""

    name = METHOD
    version = METHOD_VERSION
    config_class = CompressionPlan
    options_class = AdaptwinOptions

    def block(self, plan: CompressionPlan) -> dict:
        """The method block saved in config.json for `plan`."""
        return method_block(plan)

    def plan_of(self, block: dict) -> CompressionPlan:
        """The plan of a saved method block.

        Raises:
            ValueError: the block has no plan.
        """
        if not isinstance(block.get("plan"), dict):
            raise ValueError("the adaptwin block has no plan; re-run adapt")
        return CompressionPlan.from_dict(block["plan"])

    def build_structure(self, model: nn.Module, block: dict) -> None:
        """Give a dense model the plan's factored modules (weights loaded afterwards)."""
        from asr_app.compression.adaptwin.apply import build_structure

        build_structure(model, self.plan_of(block))

    def stages(self, options: AdaptwinOptions) -> list[Stage]:
        """The factor stage (allocate ranks, factor the product twins and feed-forward
        blocks); with `options.progressive`, then a layer-wise recovery and a further cut
        per later ratio of the schedule ("recover1", "cut1", ...). The final recovery is
        the pipeline's shared LoRA and distillation stages."""
        from asr_app.compression.adaptwin.stages import cut_stage, factor_stage, recover_stage

        stages = [Stage("factor", lambda ctx: factor_stage(ctx, options), rebuild_on_resume=True)]
        for step in range(1, len(options.schedule)):
            stages.append(Stage(f"recover{step}", functools.partial(recover_stage, step=step)))
            stages.append(Stage(f"cut{step}", functools.partial(cut_stage, opts=options, step=step)))
        return stages

    def onnx_emitters(self) -> dict[type, Callable]:
        """Emitters of TwinSelfAttention and LowRankLinear."""
        from asr_app.compression.adaptwin.onnx import EMITTERS

        return dict(EMITTERS)


ADAPTWIN = AdaPTwin()
