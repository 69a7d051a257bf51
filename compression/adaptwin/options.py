"""AdaPTwin's adaptation options (the `adaptwin` part of `asr-app adapt`'s options)."""

from __future__ import annotations

from dataclasses import dataclass

PROGRESSIVE_STEP = 0.15  # of the encoder's parameters removed per progressive cut


@dataclass(frozen=True)
class AdaptwinOptions:
    """How AdaPTwin factors the model.

    Attributes:
        target_ratio: encoder parameters kept / original (default 0.85: 15% removed, which
            holds both accuracy targets on every test speaker with margin, without a replay
            set; 0.75 removes 25%, the largest share measured to hold them on every test
            speaker; 0.55 removes 45%).
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
        twin_stats: what whitens each head's value/output twin: "input" (the layer input's
            second moment, as the query/key twin) or "head" (that head's attention-mixed
            input, softmax(.) x, what W_v^T W_o^T really acts on; measured per head).
        centre: factor the twins on mean-centred statistics and move the factors' error on
            the means into the biases (as LiteASR does for its low-rank projections).
        query_bias_fit: "plain" (least squares on the weights) or "weighted" (weighted by
            the keys' statistics: the error the logits see).
        progressive: cut in steps of `PROGRESSIVE_STEP` of the encoder (0.85, 0.70, ...,
            then target_ratio), recovering layer by layer and measuring the recovered
            model's statistics again before each further cut, instead of one cut.
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
    twin_stats: str = "input"
    centre: bool = False
    query_bias_fit: str = "plain"
    progressive: bool = False

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
        if self.twin_stats not in ("input", "head"):
            raise ValueError(f"twin_stats must be 'input' or 'head', got {self.twin_stats!r}")
        if self.query_bias_fit not in ("plain", "weighted"):
            raise ValueError(f"query_bias_fit must be 'plain' or 'weighted', got {self.query_bias_fit!r}")
        if not self.data_aware and (self.twin_stats != "input" or self.centre or self.query_bias_fit != "plain"):
            raise ValueError("twin_stats 'head', centre and query_bias_fit 'weighted' use the speaker's statistics")
        if self.progressive and not (self.data_aware and self.allocation == "sensitivity" and self.ffn):
            raise ValueError(
                "progressive cuts re-allocate ranks from the statistics: need data_aware, "
                "allocation 'sensitivity' and ffn"
            )
        if self.progressive and self.ffn_method != "lowrank":
            raise ValueError("progressive cuts lower the feed-forward ranks: use ffn_method 'lowrank'")
        if self.decoder_keep is not None and not 0 < self.decoder_keep < 1:
            raise ValueError(f"decoder_keep must be in (0, 1) or None, got {self.decoder_keep}")
        if self.decoder_attention_rank is not None and self.decoder_attention_rank < 1:
            raise ValueError(f"decoder_attention_rank must be >= 1 (e.g. 32 of 64), got {self.decoder_attention_rank}")

    @property
    def needs_activation_stats(self) -> bool:
        """Whether the pipeline's calibrate stage must measure activation statistics."""
        return self.data_aware

    @property
    def schedule(self) -> tuple[float, ...]:
        """The ratios cut to in turn: (target_ratio,), or with `progressive` every
        1 - k * PROGRESSIVE_STEP above target_ratio, then target_ratio."""
        if not self.progressive:
            return (self.target_ratio,)
        steps, k = [], 1
        while (ratio := round(1 - k * PROGRESSIVE_STEP, 6)) > self.target_ratio + 1e-6:
            steps.append(ratio)
            k += 1
        return (*steps, self.target_ratio)

    @property
    def needs_head_stats(self) -> bool:
        """Whether the calibrate stage must also measure each head's statistics."""
        return self.twin_stats == "head"

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
        if self.twin_stats != "input":
            name += f"-vo{self.twin_stats}"
        if self.centre:
            name += "-centre"
        if self.query_bias_fit != "plain":
            name += f"-qb{self.query_bias_fit}"
        if self.progressive:
            name += "-progressive"
        return name
