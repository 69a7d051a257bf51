"""CALD's adaptation options (the `cald` part of `asr-app adapt`'s options)."""

from __future__ import annotations

from dataclasses import dataclass

from asr_app.compression.cald.config import FEATURE_MAPS, check_chunking


@dataclass(frozen=True)
class CaldOptions:
    """How CALD converts and trains the encoder.

    Attributes:
        feature_map: "hedgehog" (learned, the default), "elu" or "relu" (fixed baselines).
        chunk_frames: frames (20 ms each) per chunk of the saved model, offline and live
            (100: 2 s).
        window_frames: frames before a chunk still reached by exact softmax (50: 1 s).
        train_chunks: chunk sizes drawn per batch in the layer-wise and fine-tuning stages
            (dynamic chunking; 0 stands for the whole window), so the same weights serve
            other chunk sizes too.
        transfer_epochs: passes of attention transfer over the speaker's windows (feature
            maps and mixing gains trained, label-free; 0 skips it).
        transfer_lr: its learning rate.
    Raises:
        ValueError: out-of-range values, naming the field.
    Source: He and Garner, "Joint Fine-tuning and Conversion of Pretrained Speech and
    Language Models towards Linear Complexity" (CALD, arXiv 2410.06846); the mixer and the
    chunking are ours (compression/cald/README.md).
    """

    method = "cald"  # the registry name these options belong to (a class attribute)

    feature_map: str = "hedgehog"
    chunk_frames: int = 100
    window_frames: int = 50
    train_chunks: tuple[int, ...] = (25, 50, 100, 200, 0)
    transfer_epochs: float = 1.0
    transfer_lr: float = 1e-2

    def __post_init__(self):
        if self.feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {', '.join(FEATURE_MAPS)}, got {self.feature_map!r}")
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {self.chunk_frames}")
        check_chunking(self.chunk_frames, self.window_frames)
        if any(c < 0 for c in self.train_chunks):
            raise ValueError(f"train_chunks must be >= 0 (0: the whole window), got {self.train_chunks}")
        if self.transfer_epochs < 0:
            raise ValueError(f"transfer_epochs must be >= 0, got {self.transfer_epochs}")
        if self.transfer_lr <= 0:
            raise ValueError(f"transfer_lr must be > 0, got {self.transfer_lr}")

    def check_methods(self, names: list[str]) -> None:
        """Raise ValueError unless CALD composes with the methods `names` in that order.

        AdaPTwin's query/key twin keeps only the product W_q W_k^T, while the feature maps
        act on queries and keys apart, so the two do not compose yet; FVT (vocabulary only)
        does, after CALD.
        """
        if "adaptwin" in names:
            raise ValueError(
                "cald and adaptwin do not compose yet: the feature maps act on queries and keys "
                "apart, the query/key twin keeps only their product; use --methods cald or cald fvt"
            )

    @property
    def needs_activation_stats(self) -> bool:
        """CALD needs no activation statistics."""
        return False

    @property
    def compresses_encoder(self) -> bool:
        """The encoder's attention changes: layer-wise distillation runs."""
        return True

    @property
    def compresses_decoder(self) -> bool:
        """The decoder stays as it is."""
        return False

    @property
    def train_chunk_sizes(self) -> tuple[int | None, ...]:
        """`train_chunks` with 0 as None (the whole window)."""
        return tuple(c or None for c in self.train_chunks)

    def run_name(self) -> str:
        """This method's part of the run folder's name."""
        name = f"-cald-{self.feature_map}-c{self.chunk_frames}w{self.window_frames}"
        if self.train_chunks != (25, 50, 100, 200, 0):
            name += "-t" + "_".join(map(str, self.train_chunks))
        if self.transfer_epochs != 1.0:
            name += f"-at{self.transfer_epochs:g}"
        return name
