"""Independent float64 reference for LABO's inner problem (LABO.md §2–3).

Deliberately naive and written from the method description only (no solver internals):

    m_β = softmax over the non-target, non-masked classes of β·z      (m_β[y] = 0)
    KL(m_β ‖ ū) = Σ_k m_β,k · log m_β,k + log n,   n = number of non-target, finite-logit classes
    β* = 1                              if KL(m_1 ‖ ū) ≤ δ   (constraint inactive, u* = p̄)
    β* = 0                              if δ = 0              (u* = ū)
    β* = root of KL(m_β ‖ ū) − δ on [0, 1] otherwise, found by plain bisection to 1e-12.

Classes whose logit is −inf are outside the support: they get zero mass and ū is uniform over the
remaining non-target classes. Everything is computed in float64 on CPU.
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import Tensor

BISECTION_TOL = 1e-12


def _support(z: Tensor, y: Tensor) -> Tensor:
    """Boolean [N, V]: non-target classes with a finite (not −inf) logit."""
    keep = torch.isfinite(z)
    keep[torch.arange(z.size(0)), y] = False
    return keep


def tempered(z: Tensor, y: Tensor, beta: Tensor) -> Tensor:
    """m_β [N, V] in float64 for per-row β (zero at the target and at masked classes)."""
    z = z.double()
    beta = torch.as_tensor(beta, dtype=torch.float64).expand(z.size(0))
    keep = _support(z, y)
    x = torch.where(keep, beta.unsqueeze(1) * torch.where(keep, z, 0.0), -math.inf)
    return torch.softmax(x, dim=1).masked_fill(~keep, 0.0)


def kl_to_uniform(z: Tensor, y: Tensor, beta: Tensor) -> Tensor:
    """KL(m_β ‖ ū) per row, in float64."""
    z = z.double()
    beta = torch.as_tensor(beta, dtype=torch.float64).expand(z.size(0))
    keep = _support(z, y)
    x = torch.where(keep, beta.unsqueeze(1) * torch.where(keep, z, 0.0), -math.inf)
    logm = torch.log_softmax(x, dim=1)
    m = logm.exp()
    plogp = torch.where(keep, m * logm, 0.0).sum(1)
    return plogp + keep.sum(1).double().log()


def kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p ‖ q) per row in float64 (0·log 0 = 0)."""
    p, q = p.double(), q.double()
    terms = torch.where(p > 0, p * (p.log() - q.log()), torch.zeros_like(p))
    return terms.sum(1)


def uniform(z: Tensor, y: Tensor) -> Tensor:
    """ū [N, V]: uniform over the non-target classes with finite logits."""
    keep = _support(z.double(), y).double()
    return keep / keep.sum(1, keepdim=True)


@contextlib.contextmanager
def _single_thread():
    """Bisection is many small ops; one thread avoids OpenMP stalls on busy shared CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def solve_beta(z: Tensor, y: Tensor, delta) -> Tensor:
    """β* per row by plain bisection (float64)."""
    with _single_thread():
        return _bisect(z, y, delta)


def _bisect(z: Tensor, y: Tensor, delta) -> Tensor:
    z = z.double()
    n_rows = z.size(0)
    delta = torch.as_tensor(delta, dtype=torch.float64).expand(n_rows).clone()
    beta = torch.ones(n_rows, dtype=torch.float64)
    binds = kl_to_uniform(z, y, beta) > delta
    beta[binds & (delta == 0)] = 0.0
    todo = binds & (delta > 0)
    if todo.any():
        zz, yy, dd = z[todo], y[todo], delta[todo]
        lo = torch.zeros(zz.size(0), dtype=torch.float64)
        hi = torch.ones_like(lo)
        while bool((hi - lo).max() > BISECTION_TOL):
            mid = 0.5 * (lo + hi)
            over = kl_to_uniform(zz, yy, mid) > dd
            hi = torch.where(over, mid, hi)
            lo = torch.where(over, lo, mid)
        beta[todo] = 0.5 * (lo + hi)
    return beta


def distribution(z: Tensor, y: Tensor, delta) -> Tensor:
    """u* [N, V] in float64."""
    return tempered(z, y, solve_beta(z, y, delta))
