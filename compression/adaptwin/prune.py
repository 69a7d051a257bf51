"""Structured pruning of a feed-forward block's hidden neurons (an alternative to low-rank fc1/fc2).

A Whisper feed-forward block is y = W2 gelu(W1 x + b1) + b2 with a hidden width f (4 d_model).
Keeping k of the f hidden neurons keeps k rows of fc1 and k columns of fc2: (2 d + 1) k
parameters against (2 d + 1) f, and the result is an ordinary, narrower pair of `nn.Linear`
layers (no extra matmul at inference, as a low-rank pair has).

Data-aware (with H = E[h h^T], the second moment of the hidden activations h on the
speaker's audio):
- which neurons: the k with the largest E[h_j^2] ||W2[:, j]||^2, the expected squared output
  each neuron contributes on its own;
- then fc2 is refit by least squares on the kept neurons,
      W2' = argmin E||W2 h - W2' h_K||^2 = W2 H[:, K] H[K, K]^-1,
  so the kept neurons also carry what the dropped ones correlated with.
Plain (no statistics): the k largest ||W1[j]|| ||W2[:, j]||, fc2 columns unchanged.

Source: ours, in the manner of post-training structured pruning with a least-squares
reconstruction of the layer's output (Kwon et al. 2022, "A Fast Post-Training Pruning
Framework for Transformers"); not part of AdaPTwin, whose factors are low rank.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def neuron_scores(w1: Tensor, w2: Tensor, cov_h: Tensor | None = None) -> Tensor:
    """Importance of each hidden neuron, (f,) float64.

    Args:
        w1: (f, d) fc1 weight; w2: (d, f) fc2 weight.
        cov_h: (f, f) second moment of fc2's input (after GELU), or None (weight norms).
    Raises:
        ValueError: shapes that do not chain.
    """
    f, d = w1.shape
    if w2.shape != (d, f):
        raise ValueError(f"fc2 weight must be ({d}, {f}) for fc1 ({f}, {d}), got {tuple(w2.shape)}")
    out_norm2 = (w2.to(torch.float64) ** 2).sum(0)
    if cov_h is None:
        return out_norm2.sqrt() * w1.to(torch.float64).norm(dim=1)
    if cov_h.shape != (f, f):
        raise ValueError(f"cov_h must be ({f}, {f}), got {tuple(cov_h.shape)}")
    return torch.diagonal(cov_h).to(torch.float64) * out_norm2


def prune_ffn(
    fc1: nn.Linear, fc2: nn.Linear, keep: int, cov_h: Tensor | None = None, damping: float = 1e-6
) -> tuple[nn.Linear, nn.Linear, Tensor]:
    """Keep `keep` hidden neurons of fc1 -> GELU -> fc2.

    Args:
        fc1: Linear(d, f); fc2: Linear(f, d).
        keep: neurons kept, 1..f.
        cov_h: (f, f) E[h h^T] of fc2's input on calibration audio (data-aware: chosen by
            expected output, fc2 refit by least squares) or None (weight norms, no refit).
        damping: ridge on H[K, K], relative to its mean diagonal.
    Returns:
        (new fc1 Linear(d, keep), new fc2 Linear(keep, d), kept indices (keep,) ascending);
        fc2's bias is unchanged.
    Raises:
        ValueError: keep out of range or shapes that do not fit.
    """
    f = fc1.out_features
    if not 1 <= keep <= f:
        raise ValueError(f"neurons kept must be in 1..{f}, got {keep}")
    w1, w2 = fc1.weight.detach(), fc2.weight.detach()
    idx = torch.topk(neuron_scores(w1, w2, cov_h), keep).indices.sort().values
    new1 = nn.Linear(fc1.in_features, keep, bias=fc1.bias is not None, dtype=w1.dtype, device=w1.device)
    new2 = nn.Linear(keep, fc2.out_features, bias=fc2.bias is not None, dtype=w2.dtype, device=w2.device)
    with torch.no_grad():
        new1.weight.copy_(w1[idx])
        if fc1.bias is not None:
            new1.bias.copy_(fc1.bias[idx])
        if cov_h is None:
            new2.weight.copy_(w2[:, idx])
        else:
            h = cov_h.to(torch.float64)
            hkk = h[idx][:, idx]
            hkk = hkk + damping * torch.diagonal(hkk).mean() * torch.eye(keep, dtype=torch.float64)
            # W2' H[K, K] = W2 H[:, K]  (H symmetric)
            refit = torch.linalg.solve(hkk, (w2.to(torch.float64) @ h[:, idx]).T).T
            new2.weight.copy_(refit.to(w2.dtype))
        if fc2.bias is not None:
            new2.bias.copy_(fc2.bias)
    return new1, new2, idx


def ffn_keep_for_budget(d: int, f: int, weights: int) -> int:
    """Neurons a pruned block may keep for the parameters a low-rank fc1/fc2 pair spends.

    `weights` counts the low-rank pair's factor weights plus fc1's bias (f, which a low-rank
    fc1 keeps whole); a pruned block spends (2 d + 1) k on fc1 (weight and bias) and fc2's
    weight, and both keep fc2's bias. Returns k in 1..f.
    """
    return max(1, min(f, weights // (2 * d + 1)))
