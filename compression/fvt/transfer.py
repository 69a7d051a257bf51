"""Embedding transfer to a new vocabulary: FVT (each new token the mean of the original
embeddings of its pieces under the original tokenizer), PVT (tokens shared with the
original vocabulary keep their row, the rest random) and exact rows for a subset
vocabulary. Pure functions on tensors; `apply.py` puts the result into a model.

Source: Gee, Zugarini, Rigutini, Torroni, "Fast Vocabulary Transfer for Language Model
Compression" (EMNLP 2022 industry track), section 3 (FVT) and its PVT baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

INITS = ("fvt", "pvt", "subset")


@dataclass
class TransferStats:
    """How each new text token got its row.

    Attributes:
        exact: tokens whose byte string is in the original vocabulary (row copied).
        mean: tokens initialised as the mean of their original pieces (FVT).
        random: tokens initialised at random (PVT).
    """

    exact: int = 0
    mean: int = 0
    random: int = 0

    def to_dict(self) -> dict:
        return {"exact": self.exact, "mean": self.mean, "random": self.random}


def transfer_embeddings(
    old_embedding: Tensor,
    old_vocab: dict[str, int],
    old_pieces: Callable[[str], list[int]],
    new_tokens: Sequence[str],
    special_ids: Sequence[int],
    init: str = "fvt",
    seed: int = 0,
) -> tuple[Tensor, TransferStats]:
    """The embedding matrix of a new vocabulary.

    Args:
        old_embedding: (old_vocab_size, d_model) the original token embedding (tied with
            the output projection in Whisper).
        old_vocab: {byte-level token string: id} of the original's text tokens.
        old_pieces: the original tokenizer's BPE on one pre-token -> its token ids (used
            for tokens the original vocabulary lacks).
        new_tokens: the new text tokens' byte-level strings, in new id order (ids 0..n-1).
        special_ids: original ids of the special, language, task and timestamp tokens, in
            the order they follow the text tokens in the new vocabulary (rows copied).
        init: "fvt" (mean of pieces), "pvt" (random, normal with the original rows' std),
            "subset" (every new token must be an original one).
        seed: for PVT's random rows.
    Returns:
        ((n + len(special_ids), d_model) float32 matrix, TransferStats).
    Raises:
        ValueError: unknown init, or a "subset" token the original vocabulary lacks.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    old = old_embedding.detach().float()
    rows = torch.empty(len(new_tokens) + len(special_ids), old.shape[1])
    stats = TransferStats()
    gen = torch.Generator().manual_seed(seed)
    std = old[: min(old.shape[0], max(old_vocab.values(), default=0) + 1)].std().item()
    for i, token in enumerate(new_tokens):
        old_id = old_vocab.get(token)
        if old_id is not None:
            rows[i] = old[old_id]
            stats.exact += 1
        elif init == "subset":
            raise ValueError(f"subset vocabulary token {token!r} is not in the original vocabulary")
        elif init == "fvt":
            pieces = old_pieces(token)
            rows[i] = old[pieces].mean(dim=0)
            stats.mean += 1
        else:
            rows[i] = torch.randn(old.shape[1], generator=gen) * std
            stats.random += 1
    rows[len(new_tokens) :] = old[list(special_ids)]
    return rows, stats
