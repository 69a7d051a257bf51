"""The `backend=` choice shared by every op in this package.

"reference" is the plain PyTorch math (`<op>/reference.py`), always present; "auto" picks
it today. A Triton backend ("triton", `<op>/triton.py`, picked by "auto" on CUDA tensors)
joins this list when the first kernel lands.
"""

from __future__ import annotations

BACKENDS = ("auto", "reference")


def resolve_backend(backend: str) -> str:
    """The backend that runs for `backend`: "reference" for both "auto" and "reference".

    Raises:
        ValueError: `backend` is not one of BACKENDS.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    return "reference"
