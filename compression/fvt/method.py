"""FVT as a `compression.methods.Method`: its saved config (the `VocabularyPlan`), how a
saved model's vocabulary is rebuilt, and its adaptation stages. It adds no layer types, so
it has no ONNX emitters: the exported graphs take the smaller embedding and logits as they
are.

Source: Gee, Zugarini, Rigutini, Torroni, "Fast Vocabulary Transfer for Language Model
Compression" (EMNLP 2022 industry track).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from asr_app.compression.fvt.config import METHOD, METHOD_VERSION, VocabularyPlan
from asr_app.compression.fvt.options import FvtOptions
from asr_app.compression.interface import Stage

if TYPE_CHECKING:
    from torch import nn


class Fvt:
    """The FVT method (see `compression.methods.Method`)."""

    name = METHOD
    version = METHOD_VERSION
    config_class = VocabularyPlan
    options_class = FvtOptions

    def build_structure(self, model: nn.Module, block: dict) -> None:
        """Give `model` the block's vocabulary size (tied embedding and output projection,
        weights loaded afterwards) and its token ids in the configs.

        Raises:
            ValueError: a block without its vocabulary plan.
        """
        from asr_app.compression.fvt.apply import resize_vocabulary, set_config

        try:
            plan = VocabularyPlan.from_dict(block)
        except TypeError as e:
            raise ValueError(f"the fvt block is incomplete ({e}); re-run adapt") from None
        if model.config.vocab_size != plan.vocab_size:  # type: ignore[union-attr]
            resize_vocabulary(model, plan.vocab_size, plan.config["pad_token_id"])
        set_config(model, plan.config)

    def stages(self, options: FvtOptions) -> list[Stage]:
        """`transfer` (tokenizer, embedding transfer, resize) then `recover` (the embedding
        trained on the speaker's windows)."""
        from asr_app.compression.fvt.stages import recover_stage, resume_transfer, transfer_stage

        return [
            Stage("transfer", lambda ctx: transfer_stage(ctx, options), resume=resume_transfer),
            Stage("recover", lambda ctx: recover_stage(ctx, options)),
        ]

    def onnx_emitters(self) -> dict[type, Callable]:
        """None: the vocabulary change keeps the stock embedding and linear layers."""
        return {}


FVT = Fvt()
