"""Closed-form fits of a compensation map from streamed statistics (float64 throughout).

* ``solve_lstsq``: ridge least squares over all calibration tokens, ``e ≈ x W + b``:
  ``[W; b] = (Aᵀ A + λ D)⁻¹ Aᵀ E`` with ``A = [X, 1]`` built from the streamed Gram ``XᵀX``,
  cross moment ``XᵀE`` and sums, ``λ = ridge · trace(XᵀX) / dim_in`` (relative, so it means the
  same for any activation scale) and ``D`` the identity on ``W``'s rows only (the bias is not
  shrunk). Solved by Cholesky; a Gram that is singular or worse conditioned than ``max_cond``
  falls back to a pseudoinverse with a warning.
* ``solve_mean``: the paper's Theorem 1, ``W = pinv(E[x]) · E[ε]``, where ``E[x]`` and ``E[ε]`` are
  ``(P, D)`` matrices of per-position means over calibration samples (position counted from each
  sample's first real token, see ``PositionalMeans``): the "expected input sequence" and the
  "expected error sequence" of the paper's §3.4.
"""

from __future__ import annotations

import warnings

import torch

from ..calibration.statistics import CrossMoments, PositionalMeans
from ..errors import PCError


class IllConditionedWarning(UserWarning):
    """The Gram matrix was singular or badly conditioned; a pseudoinverse was used."""


def solve_lstsq(
    moments: CrossMoments, *, ridge: float = 1e-4, bias: bool = True, max_cond: float = 1e12
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(W (dim_in, dim_out), b (dim_out,) or None)`` minimising ``Σ‖x W + b − e‖² + λ‖W‖²``."""
    if moments.count == 0:
        raise PCError("no calibration tokens reached this layer", "check the calibration data is not empty")
    d = moments.dim_in
    gram, cross = moments.gram, moments.cross
    if bias:
        gram = torch.zeros(d + 1, d + 1, dtype=torch.float64)
        gram[:d, :d] = moments.gram
        gram[:d, d] = gram[d, :d] = moments.sum_x
        gram[d, d] = moments.count
        cross = torch.cat([moments.cross, moments.sum_e[None, :]], dim=0)
    lam = ridge * float(torch.trace(moments.gram)) / d
    regularised = gram.clone()
    regularised.diagonal()[:d] += lam
    solution = None
    eigvals = torch.linalg.eigvalsh(regularised)
    cond = float(eigvals[-1] / eigvals[0]) if float(eigvals[0]) > 0 else float("inf")
    if cond <= max_cond:
        factor, info = torch.linalg.cholesky_ex(regularised)
        if int(info) == 0:
            solution = torch.cholesky_solve(cross, factor)
    if solution is None:
        warnings.warn(
            f"calibration Gram matrix is singular or ill-conditioned (condition number {cond:.3g}); "
            "using a pseudoinverse — more or more varied calibration data, or a larger --ridge, avoids this",
            IllConditionedWarning,
            stacklevel=2,
        )
        solution = torch.linalg.pinv(regularised, hermitian=True) @ cross
    if bias:
        return solution[:d], solution[d]
    return solution, None


def solve_mean(means: PositionalMeans, rcond: float = 1e-10) -> torch.Tensor:
    """``W = pinv(E[x]) E[ε]`` from per-position means (paper Theorem 1)."""
    mean_x, mean_e = means.means()
    if mean_x.shape[0] == 0:
        raise PCError("no calibration tokens reached this layer", "check the calibration data is not empty")
    return torch.linalg.pinv(mean_x, rtol=rcond) @ mean_e
