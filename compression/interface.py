"""The compression-method interface: what a method provides (`Method`) and the adaptation
stages it adds (`Stage`); the registry is `compression.methods`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Stage:
    """One named, resumable step a method adds to adaptation.

    Attributes:
        name: the stage's name within its method ("factor"); the pipeline keys resume
            state by "<method>.<name>".
        run: called with the pipeline's context (`asr_app.adapt.pipeline.Context`: the
            teacher model, data, statistics, the run folder); returns a JSON-able result
            dict that is stored in the run state.

        rebuild_on_resume: the stage can rebuild its change from its earlier result
            (`ctx.done(key)`; AdaPTwin's factors from the saved plan). The pipeline saves
            the model after each method stage and, on resume, skips the stage and
            rebuilds the model from that file and the method blocks; only a run folder
            without that file (written before stages saved their model) runs such a
            stage again, with its result; another stage then runs from scratch.
        resume: called with the context and the stage's saved result when the stage is
            skipped on resume, after the model is rebuilt, to restore what else the stage
            set up (FVT: its tokenizer and the relabelled training windows).
    """

    name: str
    run: Callable[[Any], dict]
    rebuild_on_resume: bool = False
    resume: Callable[[Any, dict], None] | None = None


@runtime_checkable
class Method(Protocol):
    """What a compression method provides (see the module docstring)."""

    name: str
    version: int

    # Read-only (properties), so a method's plain class attributes `config_class = Plan`
    # (type[Plan]) satisfy them; a settable `type` member would have to be exactly `type`.
    @property
    def config_class(self) -> type:
        """The dataclass of the method's saved settings (`to_dict()` / `from_dict(d)`)."""
        ...

    @property
    def options_class(self) -> type:
        """The frozen dataclass of the method's adaptation options."""
        ...

    def stages(self, options: Any) -> list[Stage]:
        """The method's adaptation stages, in order, for its options dataclass."""
        ...

    def build_structure(self, model: nn.Module, block: dict) -> None:
        """Rebuild this method's layers on `model` (dense, from config) from its saved
        config block ({"method", "version", ...}); raises ValueError on a bad block."""
        ...

    def onnx_emitters(self) -> dict[type, Callable]:
        """{layer type: emitter} for the layers this method introduces."""
        ...
