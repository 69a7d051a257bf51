"""AdaPTwin's adaptation options (the `adaptwin` part of `asr-app adapt`'s options)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AdaptwinOptions:
    """How AdaPTwin factors the model.

    Attributes:
        target_ratio: encoder parameters kept / original (default 0.85: 15% removed, the
            largest share measured to hold both accuracy targets on every test speaker
            without a replay set; 0.55 removes 45%).
        allocation: "sensitivity" (data-aware ranks per layer and head) or "uniform".
        data_aware: whitened factorization with the speaker's activation statistics.
        mode: "joint" (product twins) or "separate" (Q and K truncated apart; ablation).
        ffn: also factor fc1/fc2 (needed past about 30% of the encoder).
        ffn_method: how the feed-forward blocks shrink: "lowrank" (fc1 and fc2 as
            speaker-whitened low-rank pairs, the default) or "prune" (each block keeps the
            hidden neurons its low-rank ranks would pay for, chosen on the speaker's
            activations, fc2 refit by least squares; `prune.py`).
        decoder_keep: also factor the decoder's fc1/fc2, keeping about this share of their
            parameters (speaker-whitened when data_aware, one rank for all), or None
            (default: the decoder stays dense).
        decoder_attention_rank: also factor every decoder self- and cross-attention at this
            per-head rank (1..head_dim; its KV cache shrinks to rank-wide keys and values),
            or None (default: dense). The token embedding always stays dense.
    Raises:
        ValueError: out-of-range or conflicting values, naming the field.
    """

    method = "adaptwin"  # the registry name these options belong to (a class attribute)

    target_ratio: float = 0.85
    allocation: str = "sensitivity"
    data_aware: bool = True
    mode: str = "joint"
    ffn: bool = True
    ffn_method: str = "lowrank"
    decoder_keep: float | None = None
    decoder_attention_rank: int | None = None

    def __post_init__(self):
        if not 0 < self.target_ratio <= 1:
            raise ValueError(f"target_ratio must be in (0, 1], got {self.target_ratio}")
        if self.allocation not in ("sensitivity", "uniform"):
            raise ValueError(f"allocation must be 'sensitivity' or 'uniform', got {self.allocation!r}")
        if self.mode not in ("joint", "separate"):
            raise ValueError(f"mode must be 'joint' or 'separate', got {self.mode!r}")
        if self.ffn_method not in ("lowrank", "prune"):
            raise ValueError(f"ffn_method must be 'lowrank' or 'prune', got {self.ffn_method!r}")
        if self.mode == "separate" and (self.data_aware or self.allocation != "uniform"):
            raise ValueError("mode 'separate' is the plain baseline: use it with allocation 'uniform', data_aware off")
        if self.allocation == "sensitivity" and not self.data_aware:
            raise ValueError("allocation 'sensitivity' needs data_aware (it weighs whitened singular values)")
        if self.decoder_keep is not None and not 0 < self.decoder_keep < 1:
            raise ValueError(f"decoder_keep must be in (0, 1) or None, got {self.decoder_keep}")
        if self.decoder_attention_rank is not None and self.decoder_attention_rank < 1:
            raise ValueError(f"decoder_attention_rank must be >= 1 (e.g. 32 of 64), got {self.decoder_attention_rank}")

    @property
    def needs_activation_stats(self) -> bool:
        """Whether the pipeline's calibrate stage must measure activation statistics."""
        return self.data_aware

    @property
    def compresses_decoder(self) -> bool:
        """Whether the decoder's layers are factored too (recovery then trains them)."""
        return self.decoder_keep is not None or self.decoder_attention_rank is not None

    def run_name(self) -> str:
        """This method's part of the run folder's name: the ratio and what differs from the
        defaults (the same names as before the pipeline had methods, so old runs resume)."""
        name = f"-keep{self.target_ratio:g}"
        if self.allocation != "sensitivity":
            name += f"-{self.allocation}"
        if not self.data_aware:
            name += "-plain"
        if self.mode != "joint":
            name += f"-{self.mode}"
        if not self.ffn:
            name += "-attnonly"
        elif self.ffn_method != "lowrank":
            name += f"-ffn{self.ffn_method}"
        if self.decoder_keep is not None:
            name += f"-dec{self.decoder_keep:g}"
        if self.decoder_attention_rank is not None:
            name += f"-decattn{self.decoder_attention_rank}"
        return name
