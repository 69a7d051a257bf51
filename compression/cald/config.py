"""What a CALD model records in its method block of config.json: the feature map and the
chunking its encoder layers were converted with, so a saved model is rebuilt the same way.

Imports neither torch nor the mixer: the method registry loads it, and the onnx backend runs
without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

METHOD = "cald"
METHOD_VERSION = 1  # bump when the saved layout changes
FEATURE_MAPS = ("hedgehog", "elu", "relu")


def check_chunking(chunk_frames: int | None, window_frames: int) -> None:
    """Raise ValueError (naming the value) unless chunk_frames is None or >= 1 and
    window_frames >= 0."""
    if chunk_frames is not None and chunk_frames < 1:
        raise ValueError(f"chunk_frames must be None (the whole window) or >= 1, got {chunk_frames}")
    if window_frames < 0:
        raise ValueError(f"window_frames must be >= 0, got {window_frames}")


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


__all__ = ["FEATURE_MAPS", "METHOD", "METHOD_VERSION", "HybridPlan", "check_chunking", "method_block"]
