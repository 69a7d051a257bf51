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
    mean: Tensor | None = None,
    mean_k: Tensor | None = None,
    weighted_bias: bool = False,
    key_mean: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Rank-`rank` query/key twins of one head, the 1/sqrt(head_dim) scale folded in.

    Logits are (x W_q^T + b_q)(y W_k^T)^T * scale = x (scale W_q^T W_k) y^T + (scale b_q W_k) y^T.
    The first term is factored; the second (a per-key bias) is kept by a least-squares
    query bias on the new key factor, exact whenever the key factor spans W_k's rows
    (always at full rank).

    Mean-centring (`mean`, `mean_k` given): with y = mu_y + y~, every term constant over
    keys cancels in the softmax, so the key side of the product M = scale W_q^T W_k is
    weighted by the keys' covariance (not their second moment). The query side keeps its
    second moment: the rank-r product's error on the query mean, mu_x (M - M_r), is a
    per-key bias that the rank-r query bias can take up only within the key factor's span,
    so the factorization must still weigh it; what it can, the new query bias takes up with
    the original bias. `weighted_bias` fits that bias b in E[((t - b B^T) y~^T)^2] (weighted
    by the keys' covariance) instead of plain least squares ||t - b B^T||.

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
        mean, mean_k: (d_model,) means of the queries' and keys' input (mean_k default
            `mean`), or None: no centring. Need `cov`.
        weighted_bias: fit the query bias weighted by the keys' covariance (their second
            moment when no keys' mean is known); needs `cov`.
        key_mean: (d_model,) the keys' mean for the weighted fit when the factorization
            itself is not centred (default `mean_k`).
    Returns:
        (w_q_new, w_k_new, b_q_new): (rank, d_model), (rank, d_model), (rank,) or None.
        Logits of the factored head use scale 1: x w_q_new^T + b_q_new against y w_k_new^T.
    Raises:
        ValueError: as factorize_product; a mean or weighted fit without `cov`.
    Source: AdaPTwin (Biju et al., 2024); centring with bias correction as LiteASR
        (Kamahori et al., 2025) does for its low-rank projections; the weighted fit is ours.
    """
    if (mean is not None or weighted_bias) and cov is None:
        raise ValueError("mean-centring and the weighted query-bias fit need the input statistics (cov)")
    cov_k = cov if cov_k is None else cov_k
    mean_k = mean if mean_k is None else mean_k
    ck = centred(cov_k, mean_k)
    left = scale * w_q.T  # (d, head_dim)
    a, b = _factor(left, w_k.T, rank, cov, ck, mode)  # (d, r) each
    b_new = None
    if b_q is not None or mean is not None:
        work = torch.float64
        target = torch.zeros(w_k.shape[1], dtype=work) if b_q is None else scale * (b_q @ w_k).to(work)
        if mean is not None:  # the rank-r product's error on the query mean: a per-key bias
            m = mean.to(work)
            target = target + (m @ left.to(work)) @ w_k.to(work) - (m @ a.to(work)) @ b.T.to(work)
        weight = centred(cov_k, mean_k if mean_k is not None else key_mean) if weighted_bias else None
        b_new = _bias_fit(b.to(work), target, weight).to(w_q.dtype)
    return a.T.contiguous(), b.T.contiguous(), b_new


def centred(cov: Tensor | None, mean: Tensor | None) -> Tensor | None:
    """cov - mean^T mean: the covariance from a second moment (d, d) and mean (d,), float64,
    its eigenvalues clipped at 0 (the subtraction can leave rounding-sized negative ones
    where the inputs barely vary about their mean); `cov` unchanged when `mean` is None."""
    if cov is None or mean is None:
        return cov
    m = mean.to(torch.float64)
    c = cov.to(torch.float64) - torch.outer(m, m)
    evals, evecs = torch.linalg.eigh((c + c.T) / 2)
    return (evecs * evals.clamp_min(0)) @ evecs.T


def _bias_fit(basis: Tensor, target: Tensor, weight: Tensor | None, damping: float = 1e-6) -> Tensor:
    """argmin_b (t - B b)^T W (t - B b) for B (d, r), t (d,), W (d, d) or None (identity)."""
    if weight is None:
        return torch.linalg.lstsq(basis, target).solution
    w = weight.to(basis.dtype)
    gram = basis.T @ w @ basis
    gram = gram + damping * gram.diagonal().mean().clamp_min(1e-12) * torch.eye(gram.shape[0], dtype=basis.dtype)
    return torch.linalg.solve(gram, basis.T @ (w @ target))


def factor_value_output(
    w_v: Tensor,
    b_v: Tensor | None,
    w_o: Tensor,
    rank: int,
    cov: Tensor | None = None,
    mode: str = "joint",
    mean: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Rank-`rank` value/output twins of one head; the value bias folds into the output bias.

    The head adds softmax(.) (y W_v^T + b_v) W_o^T = z W_v^T W_o^T + b_v W_o^T to the output,
    z = softmax(.) y the attention-mixed input (softmax rows sum to one, so b_v contributes
    the constant b_v W_o^T: it moves exactly into the output bias). The product
    M = W_v^T W_o^T is factored. With `mean` (of z), M is factored on z's covariance and its
    error on the mean, mean (M - M_r), goes into the output bias too (exact on the mean).

    Args:
        w_v: (head_dim, d_model) rows of v_proj for this head; b_v: (head_dim,) or None.
        w_o: (d_model, head_dim) columns of out_proj for this head.
        cov: (d_model, d_model) second moment of what the product acts on (the layer input,
            or this head's attention-mixed input), weighting the value side (the output side
            is unweighted), or None; mode: as `factor_query_key`.
        mean: (d_model,) mean of that input, or None (no centring). Needs `cov`.
    Returns:
        (w_v_new, w_o_new, out_bias_delta): (rank, d_model), (d_model, rank), and the
        (d_model,) amount to add to out_proj's bias (None without b_v and mean).
    Raises:
        ValueError: as factorize_product; a mean without `cov`.
    Source: AdaPTwin (Biju et al., 2024); centring with bias correction as LiteASR.
    """
    if mean is not None and cov is None:
        raise ValueError("mean-centring needs the input statistics (cov)")
    eye = None if cov is None else torch.eye(cov.shape[0], dtype=torch.float64)
    a, b = _factor(w_v.T, w_o, rank, centred(cov, mean), eye, mode)
    delta = (b_v @ w_o.T) if b_v is not None else None
    if mean is not None:
        work = torch.float64
        m = mean.to(work)
        err = (m @ w_v.T.to(work)) @ w_o.T.to(work) - (m @ a.to(work)) @ b.T.to(work)
        delta = (err if delta is None else delta.to(work) + err).to(w_v.dtype)
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

    la, lb = whitener(cov_a, damping), whitener(cov_b, damping)
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

    A covariance computed as a second moment less the mean's outer product can lose
    definiteness to rounding; the damping then grows tenfold until Cholesky succeeds (at
    most to 1% of the mean diagonal).

    Args:
        cov: (n, n) symmetric positive semi-definite, e.g. E[x^T x] of a layer's inputs.
    Returns:
        (n, n) float64 lower-triangular L.
    Raises:
        torch.linalg.LinAlgError: not positive semi-definite even at 1% damping.
    """
    c = cov.to(torch.float64)
    c = (c + c.T) / 2
    eye = torch.eye(c.shape[0], dtype=torch.float64)
    scale = c.diagonal().mean().clamp_min(1e-12)
    while True:
        factor, info = torch.linalg.cholesky_ex(c + damping * scale * eye)
        if int(info) == 0 or damping >= 1e-2:
            return torch.linalg.cholesky(c + damping * scale * eye) if int(info) else factor
        damping *= 10


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
