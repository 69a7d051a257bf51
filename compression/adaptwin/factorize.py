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


def factor_query_key(
    w_q: Tensor,
    b_q: Tensor | None,
    w_k: Tensor,
    rank: int,
    scale: float,
    cov: Tensor | None = None,
    mode: str = "joint",
    cov_k: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
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
        cov: (d_model, d_model) second moment of the layer's input (data-aware, whitened
            factorization), or None (plain Frobenius).
        mode: "joint" (product twins) or "separate" (truncate W_q and W_k on their own:
            the ablation baseline).
        cov_k: second moment of the keys' input when it differs from the queries' (cross-
            attention: the encoder output); default `cov` (self-attention).
    Returns:
        (w_q_new, w_k_new, b_q_new): (rank, d_model), (rank, d_model), (rank,) or None.
        Logits of the factored head use scale 1: x w_q_new^T + b_q_new against y w_k_new^T.
    Raises:
        ValueError: as factorize_product.
    """
    a, b = _factor(scale * w_q.T, w_k.T, rank, cov, cov if cov_k is None else cov_k, mode)  # (d, r) each
    b_new = None
    if b_q is not None:
        target = scale * (b_q @ w_k)  # (d,): the per-key bias direction
        b_new = torch.linalg.lstsq(b.to(torch.float64), target.to(torch.float64)).solution.to(w_q.dtype)
    return a.T.contiguous(), b.T.contiguous(), b_new


def factor_value_output(
    w_v: Tensor, b_v: Tensor | None, w_o: Tensor, rank: int, cov: Tensor | None = None, mode: str = "joint"
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Rank-`rank` value/output twins of one head; the value bias folds into the output bias.

    The head adds softmax(.) (y W_v^T + b_v) W_o^T to the output. Softmax rows sum to one, so
    b_v contributes the constant b_v W_o^T: it moves exactly into the output bias, and the
    product W_v^T W_o^T is factored.

    Args:
        w_v: (head_dim, d_model) rows of v_proj for this head; b_v: (head_dim,) or None.
        w_o: (d_model, head_dim) columns of out_proj for this head.
        cov: (d_model, d_model) second moment of the layer's input, weighting the value side
            (the output side is unweighted), or None; mode: as `factor_query_key`.
    Returns:
        (w_v_new, w_o_new, out_bias_delta): (rank, d_model), (d_model, rank), and the
        (d_model,) amount to add to out_proj's bias (None without b_v).
    Raises:
        ValueError: as factorize_product.
    """
    eye = None if cov is None else torch.eye(cov.shape[0], dtype=cov.dtype)
    a, b = _factor(w_v.T, w_o, rank, cov, eye, mode)
    delta = (b_v @ w_o.T) if b_v is not None else None
    return a.T.contiguous(), b.contiguous(), delta


def factorize_product_whitened(
    a: Tensor, b: Tensor, rank: int, cov_a: Tensor, cov_b: Tensor | None = None, damping: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Data-aware rank-`rank` factors of a @ b.T, weighted by the inputs' second moments.

    For inputs x, y with second-moment matrices C_a = E[x^T x], C_b = E[y^T y] (d_model x
    d_model), the error x (M - M_r) y^T of the product M = a b^T has expected square
    ||L_a^T (M - M_r) L_b||_F^2 when x and y are independent, C = L L^T (Cholesky). The
    minimizer factors the whitened product (L_a^T a)(L_b^T b)^T by `factorize_product`
    and maps back with L^-T (Eckart-Young in the whitened space).

    Args:
        a, b: (d_model, head_dim).
        rank: 1..head_dim.
        cov_a: (d_model, d_model) second moment of the inputs multiplying `a`.
        cov_b: the same for `b` (default: cov_a, self-attention).
        damping: added to the diagonal (times its mean) so Cholesky succeeds.
    Returns:
        (a_r, b_r), each (d_model, rank).
    Raises:
        ValueError: as factorize_product, or a covariance of the wrong shape.
    Source: activation-aware low-rank approximation (whitening), as in SVD-LLM; used here
        for AdaPTwin's "adaptive" (speaker-data-aware) variant.
    """
    cov_b = cov_a if cov_b is None else cov_b
    d = a.shape[0]
    for name, c in (("cov_a", cov_a), ("cov_b", cov_b)):
        if c.shape != (d, d):
            raise ValueError(f"{name} must be ({d}, {d}), got {tuple(c.shape)}")

    def chol(c: Tensor) -> Tensor:
        c = c.to(torch.float64)
        eye = torch.eye(d, dtype=torch.float64)
        return torch.linalg.cholesky(c + damping * c.diagonal().mean().clamp_min(1e-12) * eye)

    la, lb = chol(cov_a), chol(cov_b)
    wa, wb = factorize_product(la.T @ a.to(torch.float64), lb.T @ b.to(torch.float64), rank)
    a_r = torch.linalg.solve_triangular(la.T, wa, upper=True)
    b_r = torch.linalg.solve_triangular(lb.T, wb, upper=True)
    return a_r.to(a.dtype), b_r.to(b.dtype)


def factorize_separately(a: Tensor, b: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Rank-`rank` factors of a @ b.T from truncating a and b separately (ablation baseline).

    Each of a, b is replaced by its own best rank-`rank` approximation (SVD), then the
    product of the two truncations is written as a_r @ b_r.T with a_r, b_r (d_model, rank).
    Same parameter count as `factorize_product` at the same rank, never a smaller error.

    Args / Returns / Raises: as `factorize_product`.
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"a and b must be (d_model, head_dim) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not 1 <= rank <= a.shape[1]:
        raise ValueError(f"rank must be in 1..{a.shape[1]}, got {rank}")
    ua, sa, vha = torch.linalg.svd(a.to(torch.float64), full_matrices=False)
    ub, sb, vhb = torch.linalg.svd(b.to(torch.float64), full_matrices=False)
    # a_trunc @ b_trunc.T = ua_r diag(sa_r) vha_r vhb_r.T diag(sb_r) ub_r.T
    a_r = ua[:, :rank] * sa[:rank] @ (vha[:rank] @ vhb[:rank].T) * sb[:rank]
    b_r = ub[:, :rank]
    return a_r.to(a.dtype), b_r.to(b.dtype)


def _factor(a: Tensor, b: Tensor, rank: int, cov_a: Tensor | None, cov_b: Tensor | None, mode: str):
    if mode not in ("joint", "separate"):
        raise ValueError(f"mode must be 'joint' or 'separate', got {mode!r}")
    if mode == "separate":
        if cov_a is not None:
            raise ValueError("mode 'separate' is the plain-SVD baseline; pass cov=None")
        return factorize_separately(a, b, rank)
    if cov_a is None:
        return factorize_product(a, b, rank)
    return factorize_product_whitened(a, b, rank, cov_a, cov_b)


def whitener(cov: Tensor, damping: float = 1e-6) -> Tensor:
    """Lower Cholesky factor L of a damped second-moment matrix, cov + damping*mean(diag)*I = L L^T.

    Args:
        cov: (n, n) symmetric positive semi-definite, e.g. E[x^T x] of a layer's inputs.
    Returns:
        (n, n) float64 lower-triangular L.
    """
    c = cov.to(torch.float64)
    eye = torch.eye(c.shape[0], dtype=torch.float64)
    return torch.linalg.cholesky(c + damping * c.diagonal().mean().clamp_min(1e-12) * eye)


def whitened_product_singular_values(
    a: Tensor, b: Tensor, cov_a: Tensor | None = None, cov_b: Tensor | None = None
) -> Tensor:
    """Singular values of L_a^T a b^T L_b, (head_dim,) float64: sum of squares past rank r is
    the expected squared error of the rank-r product on inputs with these second moments
    (plain singular values of a b^T when a covariance is None)."""
    a = a.to(torch.float64) if cov_a is None else whitener(cov_a).T @ a.to(torch.float64)
    b = b.to(torch.float64) if cov_b is None else whitener(cov_b).T @ b.to(torch.float64)
    return product_singular_values(a, b).to(torch.float64)


def factor_linear(w: Tensor, rank: int, cov: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Best rank-`rank` factors of a linear layer's weight, optionally data-aware.

    Minimizes E||(W - up @ down) x||^2 over inputs with second moment cov = E[x^T x]
    (plain ||W - up @ down||_F when cov is None): SVD of W L, mapped back with L^-1.

    Args:
        w: (out_features, in_features), an `nn.Linear` weight.
        rank: 1..min(out_features, in_features).
        cov: (in_features, in_features) or None.
    Returns:
        (down, up): (rank, in_features), (out_features, rank).
    Raises:
        ValueError: rank out of range or a covariance of the wrong shape.
    Source: truncated SVD (Eckart-Young); activation whitening as in SVD-LLM.
    """
    out_f, in_f = w.shape
    if not 1 <= rank <= min(out_f, in_f):
        raise ValueError(f"rank must be in 1..{min(out_f, in_f)}, got {rank}")
    if cov is not None and cov.shape != (in_f, in_f):
        raise ValueError(f"cov must be ({in_f}, {in_f}), got {tuple(cov.shape)}")
    w64 = w.to(torch.float64)
    lw = w64 if cov is None else w64 @ whitener(cov)
    u, s, vh = torch.linalg.svd(lw, full_matrices=False)
    root = s[:rank].sqrt()
    up = u[:, :rank] * root
    down = root[:, None] * vh[:rank]
    if cov is not None:  # down @ L^-1: solve down_new @ L = down
        down = torch.linalg.solve_triangular(whitener(cov), down, upper=False, left=False)
    return down.to(w.dtype), up.to(w.dtype)


def linear_singular_values(w: Tensor, cov: Tensor | None = None) -> Tensor:
    """Singular values of W L (or W), (min(out, in),) float64; see `factor_linear`."""
    w64 = w.to(torch.float64)
    return torch.linalg.svdvals(w64 if cov is None else w64 @ whitener(cov))
