"""Fused passes over the logits for the LABO solver and loss, compiled with ``torch.compile``.

Each function below reads the N × V scores once and produces per-row scalars (or, for the
gradient, the one N × V output) in a single loop: inductor turns the elementwise + reduction
chain into one C++ (CPU) or Triton (GPU) kernel with no N × V temporaries. The eager code in
:mod:`labo_fairseq.solver` / :mod:`labo_fairseq.loss` computes the same quantities and stays the
reference and the fallback (``compile="off"``, or when compilation is unavailable).

Masking conventions match the eager code: the target column and classes whose score is ``-inf``
are outside the support of ``u*``; NaN / +inf scores propagate into the results so the caller's
non-finite checks still fire.

Modes (``--labo-compile``): ``"off"`` eager only; ``"on"`` always compiled (errors if compilation
fails); ``"auto"`` compiled for inputs of at least :data:`AUTO_MIN_ELEMENTS` elements on CPU or
CUDA, falling back to eager (with one warning) if compilation fails.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor

MODES = ("auto", "on", "off")
# Below this many logits the eager chunked code is as fast and needs no compilation.
AUTO_MIN_ELEMENTS = 1 << 22
# Columns used to pick a per-row pivot for the uniform-statistics pass (numerical centring only).
_PIVOT_COLUMNS = 64
# Above this fraction of active rows a moment pass reads all rows contiguously.
_FULL_READ_FRACTION = 0.6

_compiled = {}
_broken: Optional[BaseException] = None


def _keep_mask(x: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    """(not-target, kept) masks for float32 scores ``x`` [R, V] and targets [R] (int64).

    The column index is compared in float32 (exact for V < 2**24), which vectorises better
    than an int64 iota on CPU."""
    col = torch.arange(x.size(1), device=x.device, dtype=torch.float32)
    notgt = col.unsqueeze(0) != target.to(torch.float32).unsqueeze(1)
    return notgt, notgt & (x != -math.inf)


def _uniform_kernel(scores: Tensor, target: Tensor, pivot: Tensor):
    """Max non-target score, number of unmasked non-targets, and the first four raw moments of
    ``z − pivot`` over the unmasked non-targets (ū), in one pass."""
    x = scores.to(torch.float32)
    notgt, keep = _keep_mask(x, target)
    zmax = torch.where(notgt, x, -math.inf).amax(1)
    d = torch.where(keep, x - pivot.unsqueeze(1), 0.0)
    d2 = d * d
    return (
        zmax,
        keep.to(torch.float32).sum(1),
        d.sum(1),
        d2.sum(1),
        (d2 * d).sum(1),
        (d2 * d2).sum(1),
    )


def _moment_sums(x: Tensor, target: Tensor, beta: Tensor, shift: Tensor, center: Tensor):
    """Σw·cʲ (j = 0..5) with w = exp(β·(z − shift)) and c = z − shift − center over the
    unmasked non-targets (the centre only keeps the powers small; the exponent does not use it)."""
    _, keep = _keep_mask(x, target)
    d = torch.where(keep, x - shift.unsqueeze(1), 0.0)
    w = torch.where(keep, torch.exp(beta.unsqueeze(1) * d), 0.0)
    c = d - center.unsqueeze(1)
    c2 = c * c
    # Independent products (not a chain w·c, (w·c)·c, ...): inductor then keeps all six sums
    # in one loop; chained, it spills the intermediates to row buffers (measured 1.8x slower).
    return (
        w.sum(1),
        (w * c).sum(1),
        (w * c2).sum(1),
        (w * (c2 * c)).sum(1),
        (w * (c2 * c2)).sum(1),
        (w * (c2 * c2 * c)).sum(1),
    )


def _moments_kernel(scores: Tensor, target: Tensor, beta: Tensor, shift: Tensor, center: Tensor):
    """:func:`_moment_sums` over all rows."""
    return _moment_sums(scores.to(torch.float32), target, beta, shift, center)


def _moments_rows_kernel(
    scores: Tensor, target: Tensor, rows: Tensor, beta: Tensor, shift: Tensor, center: Tensor
):
    """:func:`_moment_sums` over the rows ``rows`` only, read through the index (no copy)."""
    return _moment_sums(scores[rows].to(torch.float32), target[rows], beta, shift[rows], center)


def _smoothed_target(x: Tensor, target: Tensor, beta: Tensor, shift: Tensor, log_norm: Tensor,
                     epsilon: float) -> Tensor:
    """q = (1 − α)·e_y + α·u* for float32 scores ``x``, u* = exp(β·(z − shift) − log_norm) on the
    support (elementwise, so it fuses into the gradient kernels that use it)."""
    notgt, keep = _keep_mask(x, target)
    d = torch.where(keep, x - shift.unsqueeze(1), 0.0)
    u = torch.where(keep, torch.exp(beta.unsqueeze(1) * d - log_norm.unsqueeze(1)), 0.0)
    return torch.where(notgt, epsilon * u, 1.0 - epsilon)


def _grad_kernel(
    lprobs: Tensor,
    target: Tensor,
    beta: Tensor,
    shift: Tensor,
    log_norm: Tensor,
    g: Tensor,
    epsilon: float,
):
    """∂loss/∂lprobs = −g·q."""
    q = _smoothed_target(lprobs.to(torch.float32), target, beta, shift, log_norm, epsilon)
    return (-g.unsqueeze(1) * q).to(lprobs.dtype)


def _logsumexp_kernel(logits: Tensor):
    """log Σ_k exp(z_k) per row in float32: the log-softmax normaliser, without an N × V output."""
    x = logits.to(torch.float32)
    top = x.amax(1)
    return top + torch.log(torch.exp(x - top.unsqueeze(1)).sum(1))


def _logits_grad_kernel(
    logits: Tensor,
    target: Tensor,
    beta: Tensor,
    shift: Tensor,
    log_norm: Tensor,
    lse: Tensor,
    g: Tensor,
    q_mass: Tensor,
    epsilon: float,
):
    """∂loss/∂z = g·(p·Σq − q) with p = softmax(z), in one pass."""
    x = logits.to(torch.float32)
    q = _smoothed_target(x, target, beta, shift, log_norm, epsilon)
    p = torch.exp(x - lse.unsqueeze(1))
    return (g.unsqueeze(1) * (p * q_mass.unsqueeze(1) - q)).to(logits.dtype)


def _get(name: str, fn):
    if name not in _compiled:
        _compiled[name] = torch.compile(fn, dynamic=True)
    return _compiled[name]


def use_compiled(mode: str, scores: Tensor) -> bool:
    """Whether the compiled kernels serve this call (see the module docstring for the modes).

    The kernels compute in float32, so scores wider than float32 always take the eager code."""
    if mode not in MODES:
        raise ValueError(f"--labo-compile must be one of {MODES}, got {mode!r}")
    if mode == "off":
        return False
    float32_compute = torch.promote_types(scores.dtype, torch.float32) == torch.float32
    if mode == "on":
        if _broken is not None:
            raise RuntimeError(f"LABO compiled kernels unavailable: {_broken}") from _broken
        return float32_compute
    return (
        float32_compute
        and _broken is None
        and scores.device.type in ("cpu", "cuda")
        and scores.numel() >= AUTO_MIN_ELEMENTS
    )


def _call(mode: str, name: str, fn, *args):
    """Runs the compiled ``fn``; returns None (eager fallback) if compilation fails in auto."""
    global _broken
    try:
        return _get(name, fn)(*args)
    except Exception as exc:  # compiler missing, unsupported platform, ...
        if mode == "on":
            raise
        _broken = exc
        warnings.warn(
            f"LABO: torch.compile of the fused kernels failed ({type(exc).__name__}: {exc}); "
            "using the eager implementation (--labo-compile off silences this)",
            RuntimeWarning,
        )
        return None


def pivot(scores: Tensor) -> Tensor:
    """Per-row centring value: mean of the finite scores among the first columns (0 if none)."""
    head = scores[:, :_PIVOT_COLUMNS].to(torch.float32)
    finite = torch.isfinite(head)
    total = torch.where(finite, head, 0.0).sum(1)
    return total / finite.sum(1).clamp_min(1).to(torch.float32)


def uniform_statistics(mode: str, scores: Tensor, target: Tensor):
    """(shift, count, mean, m2, m3, m4) like the eager pass: shift = max non-target score (0 if
    none), mean = E_ū[z − shift], m2/m3/m4 central moments under ū; None if compilation failed."""
    piv = pivot(scores)
    out = _call(mode, "uniform", _uniform_kernel, scores, target, piv)
    if out is None:
        return None
    zmax, n, s1, s2, s3, s4 = out
    zmax = torch.where(torch.isinf(zmax) & (zmax < 0), torch.zeros_like(zmax), zmax)
    n_safe = n.clamp_min(1.0)
    a = s1 / n_safe  # E[z − pivot]
    e2, e3, e4 = s2 / n_safe, s3 / n_safe, s4 / n_safe
    m2 = (e2 - a * a).clamp_min(0.0)
    m3 = e3 - 3 * a * e2 + 2 * a**3
    m4 = (e4 - 4 * a * e3 + 6 * a * a * e2 - 3 * a**4).clamp_min(0.0)
    mean = a + piv - zmax
    return zmax, n, mean, m2, m3, m4


def moments(
    mode: str, scores: Tensor, target: Tensor, rows: Tensor, beta: Tensor, shift: Tensor,
    center: Tensor,
):
    """Sums Σw·cʲ (j = 0..5) for the rows ``rows``; None if compilation failed.

    When most rows are still active, all rows are computed (a contiguous read is ~1.5x faster
    than reading through the index) and the active ones picked out afterwards."""
    n = scores.size(0)
    if rows.numel() >= _FULL_READ_FRACTION * n:
        b = torch.ones(n, dtype=beta.dtype, device=beta.device)
        c = torch.zeros(n, dtype=beta.dtype, device=beta.device)
        b[rows], c[rows] = beta, center
        out = _call(mode, "moments", _moments_kernel, scores, target, b, shift, c)
        if out is None or rows.numel() == n:
            return out
        return tuple(o[rows] for o in out)
    return _call(
        mode, "moments_rows", _moments_rows_kernel, scores, target, rows, beta, shift, center
    )


def labo_grad(mode, lprobs, target, beta, shift, log_norm, g, epsilon):
    """The LABO loss gradient w.r.t. ``lprobs`` in one pass; None if compilation failed."""
    return _call(mode, "grad", _grad_kernel, lprobs, target, beta, shift, log_norm, g, epsilon)


def logsumexp(mode, logits):
    """Per-row log Σ exp(z) in one pass; None if compilation failed."""
    return _call(mode, "logsumexp", _logsumexp_kernel, logits)


def labo_logits_grad(mode, logits, target, beta, shift, log_norm, lse, g, q_mass, epsilon):
    """The LABO loss gradient w.r.t. the logits in one pass; None if compilation failed."""
    return _call(mode, "logits_grad", _logits_grad_kernel, logits, target, beta, shift, log_norm,
                 lse, g, q_mass, epsilon)
