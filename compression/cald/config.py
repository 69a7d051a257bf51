"""What a CALD model records in its method block of config.json: the feature map and the
chunking its encoder layers were converted with, so a saved model is rebuilt the same way."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from asr_app.compression.cald.feature_map import FEATURE_MAPS
from asr_app.compression.cald.mixer import check_chunking

METHOD = "cald"
METHOD_VERSION = 1  # bump when the saved layout changes


@dataclass
class HybridPlan:
    """A CALD model's encoder.

    Attributes:
        feature_map: the linear part's feature map ("hedgehog", "elu", "relu").
        chunk_frames: frames (20 ms) per chunk offline and live; None is the whole window
            (Whisper's own attention).
        window_frames: frames before a chunk still reached by softmax.
        layers: encoder layers converted (all of them).
    Raises:
        ValueError: an unknown feature map, bad chunking.
    """

    feature_map: str = "hedgehog"
    chunk_frames: int | None = 100
    window_frames: int = 50
    layers: int = 0

    def __post_init__(self):
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"unknown feature map {self.feature_map!r}; choose one of {', '.join(FEATURE_MAPS)}")
        check_chunking(self.chunk_frames, self.window_frames)

    def to_dict(self) -> dict:
        """JSON-able fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> HybridPlan:
        """The plan of `to_dict()`'s output (unknown keys ignored).

        Raises:
            ValueError: as the constructor.
        """
        return cls(**{k: d[k] for k in ("feature_map", "chunk_frames", "window_frames", "layers") if k in d})


def method_block(plan: HybridPlan) -> dict:
    """The block config.json records for CALD applied with `plan`."""
    return {"method": METHOD, "version": METHOD_VERSION, **plan.to_dict()}


__all__ = ["METHOD", "METHOD_VERSION", "HybridPlan", "method_block"]
