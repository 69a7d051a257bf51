"""What a compressed model looks like: ranks per encoder layer and head, and the decoder's
feed-forward and attention ranks when those are factored too (saved in config.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

METHOD = "adaptwin"
METHOD_VERSION = 1  # bump when the saved layout of a compressed model changes


@dataclass
class LayerPlan:
    """Ranks of one encoder layer; None keeps that part dense.

    Attributes:
        qk: query/key twin rank per head (1..head_dim), or None.
        vo: value/output twin rank per head, or None (None exactly when qk is None).
        fc1, fc2: inner rank of the low-rank feed-forward layers, or None.
        ffn_keep: hidden neurons kept when the feed-forward block is pruned instead
            (`prune.py`; fc1/fc2 are then None), or None.
    Raises:
        ValueError: qk without vo (or the reverse), a rank below 1, or ffn_keep with
            fc1/fc2 ranks.
    """

    qk: list[int] | None = None
    vo: list[int] | None = None
    fc1: int | None = None
    fc2: int | None = None
    ffn_keep: int | None = None

    def __post_init__(self):
        if (self.qk is None) != (self.vo is None):
            raise ValueError(f"qk and vo must both be set or both None, got qk={self.qk} vo={self.vo}")
        for name in ("fc1", "fc2"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} rank must be >= 1, got {v}")
        if self.ffn_keep is not None and (self.ffn_keep < 1 or self.fc1 is not None or self.fc2 is not None):
            raise ValueError(
                f"ffn_keep must be >= 1 and leaves fc1/fc2 ranks None, got ffn_keep={self.ffn_keep} "
                f"fc1={self.fc1} fc2={self.fc2}"
            )

    def to_dict(self) -> dict:
        """As saved in config.json; ffn_keep only when set (plans saved before it lack it)."""
        d = asdict(self)
        if self.ffn_keep is None:
            del d["ffn_keep"]
        return d


@dataclass
class CompressionPlan:
    """Ranks for every encoder layer, and how the factors were found.

    Attributes:
        layers: {encoder layer index: LayerPlan}; layers not listed stay dense.
        data_aware: factors weighted by the speaker's activation second moments (whitening).
        mode: "joint" (product twins) or "separate" (Q and K truncated apart; ablation).
        decoder: {decoder layer index: LayerPlan with fc1/fc2 ranks only}. Empty: dense
            decoder feed-forward layers.
        decoder_attention: one per-head rank for every decoder self- and cross-attention
            (query/key and value/output twins alike), so the KV cache holds rank-wide keys
            and values; None keeps the decoder's attention dense.
        centre: the encoder's twins factored on mean-centred statistics, the error on the
            means moved into the biases (`factorize.factor_query_key`).
        head_stats: each head's value/output twin whitened by that head's attention-mixed
            input instead of the layer input.
        weighted_bias: the query bias fitted weighted by the keys' statistics.
    Raises:
        ValueError: an unknown mode, a decoder LayerPlan with attention ranks, a decoder
            attention rank below 1, or centre / head_stats / weighted_bias without data_aware.
    """

    layers: dict[int, LayerPlan] = field(default_factory=dict)
    data_aware: bool = True
    mode: str = "joint"
    decoder: dict[int, LayerPlan] = field(default_factory=dict)
    decoder_attention: int | None = None
    centre: bool = False
    head_stats: bool = False
    weighted_bias: bool = False

    def __post_init__(self):
        if any(lp.qk is not None for lp in self.decoder.values()):
            raise ValueError(
                "a decoder LayerPlan takes fc1/fc2 ranks only; decoder attention has one rank (decoder_attention)"
            )
        if self.decoder_attention is not None and self.decoder_attention < 1:
            raise ValueError(f"decoder_attention rank must be >= 1, got {self.decoder_attention}")
        if self.mode not in ("joint", "separate"):
            raise ValueError(f"mode must be 'joint' or 'separate', got {self.mode!r}")
        if self.mode == "separate" and self.data_aware:
            raise ValueError("mode 'separate' is the plain-SVD baseline: set data_aware=False")
        if (self.centre or self.head_stats or self.weighted_bias) and not self.data_aware:
            raise ValueError("centre, head_stats and weighted_bias weigh by the speaker's statistics: need data_aware")

    def to_dict(self) -> dict:
        d = {
            "data_aware": self.data_aware,
            "mode": self.mode,
            "layers": {str(i): lp.to_dict() for i, lp in sorted(self.layers.items())},
        }
        if self.decoder:  # absent for a dense decoder, as in models saved before it existed
            d["decoder"] = {str(i): {"fc1": lp.fc1, "fc2": lp.fc2} for i, lp in sorted(self.decoder.items())}
        if self.decoder_attention is not None:
            d["decoder_attention"] = self.decoder_attention
        d.update({k: True for k in ("centre", "head_stats", "weighted_bias") if getattr(self, k)})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CompressionPlan:
        """Inverse of `to_dict`. Raises ValueError (or KeyError) on a malformed dict."""
        layers = {int(i): LayerPlan(**lp) for i, lp in d["layers"].items()}
        decoder = {int(i): LayerPlan(fc1=lp["fc1"], fc2=lp["fc2"]) for i, lp in d.get("decoder", {}).items()}
        return cls(
            layers=layers,
            data_aware=bool(d["data_aware"]),
            mode=d["mode"],
            decoder=decoder,
            decoder_attention=d.get("decoder_attention"),
            centre=bool(d.get("centre", False)),
            head_stats=bool(d.get("head_stats", False)),
            weighted_bias=bool(d.get("weighted_bias", False)),
        )

    @classmethod
    def uniform(
        cls,
        n_layers: int,
        heads: int,
        rank: int | None,
        ffn_rank: int | None = None,
        data_aware: bool = False,
        mode: str = "joint",
    ) -> CompressionPlan:
        """The same rank everywhere (attention rank None = dense attention)."""
        hr = None if rank is None else [rank] * heads
        return cls({i: LayerPlan(hr, hr, ffn_rank, ffn_rank) for i in range(n_layers)}, data_aware, mode)


def method_block(plan: CompressionPlan) -> dict:
    """The block config.json records for AdaPTwin applied with `plan`."""
    return {"method": METHOD, "version": METHOD_VERSION, "plan": plan.to_dict()}
