"""Product-twin factorization (AdaPTwin, Biju, Sriram and Pilanci, 2024): pure functions.

In one attention head the query and key projections act only through the product
W_q^T W_k (the logits), and value and output only through W_v^T W_o^T. Each product is
factored jointly at rank r <= head_dim: a thin QR of each factor and an SVD of the small
head_dim x head_dim core give the Frobenius-optimal rank-r product (Eckart-Young) without
any d_model x d_model SVD. Derivation: README.md in this folder.

Shapes follow Hugging Face `nn.Linear` weights: q_proj.weight rows h*head_dim ... are head
h's (head_dim, d_model) query projection; out_proj.weight columns h*head_dim ... are head h's
(d_model, head_dim) output projection.
"""

from __future__ import annotations

import torch
from torch import Tensor


def factorize_product(a: Tensor, b: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Best rank-`rank` factors of the product a @ b.T (Eckart-Young on the product).

    Args:
        a, b: (d_model, head_dim) float32.
        rank: 1 <= rank <= head_dim.
    Returns:
        (a_r, b_r), each (d_model, rank), with a_r @ b_r.T the closest rank-`rank` matrix
        to a @ b.T in Frobenius norm; the singular values are split evenly (sqrt) between
        the two factors.
    Raises:
        ValueError: shapes that differ, or rank out of range.
    Source: AdaPTwin (Biju et al., 2024), product twins; QR + core SVD is ours.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must be (d_model, head_dim) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not 1 <= rank <= a.shape[1]:
        raise ValueError(f"rank must be in 1..{a.shape[1]}, got {rank}")
    work = torch.float64  # the core SVD in double keeps full rank exact to float32 precision
    qa, ra = torch.linalg.qr(a.to(work))  # (d, k), (k, k)
    qb, rb = torch.linalg.qr(b.to(work))
    u, s, vh = torch.linalg.svd(ra @ rb.T)  # core: (k, k)
    root = s[:rank].sqrt()
    a_r = qa @ (u[:, :rank] * root)
    b_r = qb @ (vh[:rank].T * root)
    return a_r.to(a.dtype), b_r.to(b.dtype)


def product_singular_values(a: Tensor, b: Tensor) -> Tensor:
    """Singular values of a @ b.T, (head_dim,), from the core (for rank allocation)."""
    _, ra = torch.linalg.qr(a.to(torch.float64))
    _, rb = torch.linalg.qr(b.to(torch.float64))
    return torch.linalg.svdvals(ra @ rb.T).to(a.dtype)


def factor_query_key(w_q: Tensor, b_q: Tensor | None, w_k: Tensor, rank: int,
                     scale: float) -> tuple[Tensor, Tensor, Tensor | None]:
    """Rank-`rank` query/key twins of one head, the 1/sqrt(head_dim) scale folded in.

    Logits are (x W_q^T + b_q)(y W_k^T)^T * scale = x (scale W_q^T W_k) y^T + (scale b_q W_k) y^T.
    The first term is factored; the second (a per-key bias) is kept by a least-squares
    query bias on the new key factor, exact whenever the key factor spans W_k's rows
    (always at full rank).

    Args:
        w_q, w_k: (head_dim, d_model) rows of q_proj / k_proj for this head.
        b_q: (head_dim,) query bias or None (Whisper's k_proj has no bias).
        rank: 1..head_dim.
        scale: the attention's logit scale, head_dim ** -0.5 for Whisper.
    Returns:
        (w_q_new, w_k_new, b_q_new): (rank, d_model), (rank, d_model), (rank,) or None.
        Logits of the factored head use scale 1: x w_q_new^T + b_q_new against y w_k_new^T.
    Raises:
        ValueError: as factorize_product.
    """
    a, b = factorize_product(scale * w_q.T, w_k.T, rank)  # (d, r) each
    b_new = None
    if b_q is not None:
        target = scale * (b_q @ w_k)  # (d,): the per-key bias direction
        b_new = torch.linalg.lstsq(b.to(torch.float64), target.to(torch.float64)).solution.to(w_q.dtype)
    return a.T.contiguous(), b.T.contiguous(), b_new


def factor_value_output(w_v: Tensor, b_v: Tensor | None, w_o: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """Rank-`rank` value/output twins of one head; the value bias folds into the output bias.

    The head adds softmax(.) (y W_v^T + b_v) W_o^T to the output. Softmax rows sum to one, so
    b_v contributes the constant b_v W_o^T: it moves exactly into the output bias, and the
    product W_v^T W_o^T is factored.

    Args:
        w_v: (head_dim, d_model) rows of v_proj for this head; b_v: (head_dim,) or None.
        w_o: (d_model, head_dim) columns of out_proj for this head.
    Returns:
        (w_v_new, w_o_new, out_bias_delta): (rank, d_model), (d_model, rank), and the
        (d_model,) amount to add to out_proj's bias (None without b_v).
    Raises:
        ValueError: as factorize_product.
    """
    a, b = factorize_product(w_v.T, w_o, rank)
    delta = (b_v @ w_o.T) if b_v is not None else None
    return a.T.contiguous(), b.contiguous(), delta
