"""The LABO solver: the closed-form inner solution of LABO.md §3 in batched PyTorch.

For every row (target position) with logits ``z`` and gold index ``y`` the optimal label
regulariser is a tempered softmax of the model's own non-target logits,
``u*_k ∝ exp(β·z_k)`` for ``k ≠ y``, with one inverse temperature ``β = 1/T ∈ [0, 1]`` per row:
``β = 1`` when ``KL(p̄ ‖ ū) ≤ δ``, otherwise the root of ``KL(m_β ‖ ū) = δ``.

Why it is written this way:
- The root finding needs only three moments of the shifted non-target logits under ``m_β``
  (Σw, Σw·d, Σw·d² with ``w = exp(β·d)``), so each iteration is one read of the logits, done in
  row chunks that stay in cache and never allocate a fresh N × V temporary.
- The closed-form start ``β₀ = sqrt(2δ / Var_ū(z))`` plus a bisection-safeguarded Newton step
  converges in a few iterations; rows that have converged drop out of later passes.
- Everything runs in float32 or wider whatever the input dtype (fp16/bf16 training), and on any
  device: there is no fairseq import and no device-specific code.
- Classes whose logit is ``-inf`` (masked) are outside the support: ``u*`` gives them zero
  mass and ``ū`` is uniform over the remaining non-target classes, so the loss stays finite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import Tensor

from labo_fairseq import fused as _fused

Budget = Union[float, Tensor]

# Finite stand-in for -inf after shifting: its square still fits in float32.
_MASKED_SHIFT = -1e18
# Elements of one row chunk: small enough to stay in a CPU core's cache, large enough that
# Python overhead is negligible. On accelerators chunking only bounds temporary memory.
_CHUNK_ELEMENTS = {"cpu": 1 << 18}
_DEFAULT_ACCELERATOR_CHUNK_ELEMENTS = 1 << 26


@dataclass
class LaboSolution:
    """Per-row results of the solver, all vectors of length N in the compute dtype.

    ``shift`` is the largest non-target score, ``log_norm`` = log Σ_{k≠y} exp(β·(z_k − shift))
    and ``mean_shifted`` = E_{u*}[z − shift]; together with ``beta`` they reproduce u* exactly
    (see :func:`tempered_rows`) without storing an N × V tensor.
    """

    beta: Tensor
    shift: Tensor
    log_norm: Tensor
    mean_shifted: Tensor
    kl: Tensor
    bound: Tensor
    iterations: int
    has_mask: bool
    row_iterations: Optional[Tensor] = None  # exact passes each row took (0: none needed)
    compiled: bool = False  # whether the fused compiled passes served this solve
    support: Optional[Tensor] = None  # unmasked non-target classes per row (0: u* is all zero)

    @property
    def temperature(self) -> Tensor:
        """T = 1/β per row (infinite where β = 0, i.e. u* = ū)."""
        return self.beta.reciprocal()


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solver works in: the input's if it is float32 or wider, else float32."""
    return torch.promote_types(dtype, torch.float32)


def chunk_rows(scores: Tensor, chunk_elements: Optional[int] = None) -> int:
    """Rows per chunk for ``scores`` [N, V] on its device."""
    if chunk_elements is None:
        chunk_elements = _CHUNK_ELEMENTS.get(
            scores.device.type, _DEFAULT_ACCELERATOR_CHUNK_ELEMENTS
        )
    return max(1, chunk_elements // max(1, scores.size(-1)))


def _chunks(n_rows: int, rows: int) -> Iterator[slice]:
    for start in range(0, n_rows, rows):
        yield slice(start, min(start + rows, n_rows))


def _budget_rows(budget: Budget, n_rows: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Validates δ and broadcasts it to one value per row."""
    budget_t = torch.as_tensor(budget, dtype=dtype, device=device)
    if budget_t.dim() > 1 or (budget_t.dim() == 1 and budget_t.numel() not in (1, n_rows)):
        raise ValueError(
            f"budget must be a float or a tensor of shape [N]={n_rows}, got shape {tuple(budget_t.shape)}"
        )
    if bool(torch.isnan(budget_t).any()) or bool((budget_t < 0).any()):
        raise ValueError(
            "LABO budget δ (--labo-budget) must be a number >= 0 (nats); got "
            f"{budget if isinstance(budget, float) else 'a tensor with negative or NaN entries'}"
        )
    return budget_t.expand(n_rows).contiguous() if budget_t.dim() else budget_t.repeat(n_rows)


def check_inputs(scores: Tensor, target: Tensor, ignore_index: Optional[int] = None) -> None:
    """Raises ValueError for shapes, vocabulary sizes or target indices the solver cannot use."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [N, V], got shape {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a floating-point tensor, got {scores.dtype}")
    if target.shape != scores.shape[:1]:
        raise ValueError(
            f"target must have shape [N]={scores.size(0)}, got {tuple(target.shape)}"
        )
    vocab = scores.size(1)
    if vocab < 2:
        raise ValueError(f"LABO needs a vocabulary of at least 2 classes, got V={vocab}")
    real = target if ignore_index is None else target[target != ignore_index]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= vocab):
        bad = int(real.min()) if int(real.min()) < 0 else int(real.max())
        raise ValueError(
            f"target index {bad} is outside the vocabulary [0, {vocab - 1}]: the target "
            "dictionary and the model's output layer disagree (re-binarize the data with the "
            "dictionary the model was built with)"
        )


def tempered_rows(
    scores: Tensor,
    target: Tensor,
    beta: Tensor,
    shift: Tensor,
    has_mask: bool,
) -> Tuple[Tensor, Tensor]:
    """Unnormalised tempered weights of one chunk and the shifted scores they weigh.

    Returns ``(w, d)`` with ``d = z − shift`` (masked entries replaced by a finite stand-in) and
    ``w = exp(β·d)``, zero at the target column and at masked classes. Both are fresh chunk-sized
    tensors in the compute dtype.
    """
    d = scores.to(compute_dtype(scores.dtype)) - shift.unsqueeze(1)
    if has_mask:
        masked = torch.isneginf(d)
        d.clamp_min_(_MASKED_SHIFT)
    w = torch.exp(beta.unsqueeze(1) * d)
    if has_mask:
        w.masked_fill_(masked, 0.0)
    w.scatter_(1, target.unsqueeze(1), 0.0)
    return w, d


def _moments(
    scores: Tensor,
    target: Tensor,
    beta: Tensor,
    shift: Tensor,
    center: Tensor,
    has_mask: bool,
) -> Tuple[Tensor, ...]:
    """Sums Σw·cʲ (j = 0..5) of one chunk under m_β, c = z − shift − center, in one pass."""
    w, d = tempered_rows(scores, target, beta, shift, has_mask)
    c = d.sub_(center.unsqueeze(1))
    sums = [w.sum(1)]
    for _ in range(5):
        sums.append(w.mul_(c).sum(1))  # w = 0 at masked entries keeps every product finite
    return tuple(sums)


def _cumulants(sums: Tuple[Tensor, ...], center: Tensor) -> Tuple[Tensor, ...]:
    """(log Σw, E_m[d], κ₂, κ₃, κ₄, κ₅) under m_β from the centred sums of :func:`_moments`."""
    s0 = sums[0]
    # s0 >= 1 whenever the row has an unmasked non-target class (its maximum contributes exp(0)).
    s0_safe = s0.clamp_min(torch.finfo(s0.dtype).tiny)
    a = sums[1] / s0_safe
    e2, e3, e4, e5 = (sj / s0_safe for sj in sums[2:])
    a2 = a * a
    mu2 = (e2 - a2).clamp_min(0.0)
    mu3 = e3 - 3.0 * a * e2 + 2.0 * a2 * a
    mu4 = e4 - 4.0 * a * e3 + 6.0 * a2 * e2 - 3.0 * a2 * a2
    mu5 = e5 - 5.0 * a * e4 + 10.0 * a2 * e3 - 10.0 * a2 * a * e2 + 4.0 * a2 * a2 * a
    return s0_safe.log(), center + a, mu2, mu3, mu4 - 3.0 * mu2 * mu2, mu5 - 10.0 * mu3 * mu2


def _uniform_statistics(
    scores: Tensor, target: Tensor, rows: int
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One pass: per-row shift (max non-target score), count of unmasked non-targets, and the
    mean, variance, third and fourth central moments of the shifted scores under ū."""
    n_rows = scores.size(0)
    cdtype = compute_dtype(scores.dtype)
    out = [torch.empty(n_rows, dtype=cdtype, device=scores.device) for _ in range(6)]
    for sl in _chunks(n_rows, rows):
        z = scores[sl].to(cdtype, copy=True)
        z.scatter_(1, target[sl].unsqueeze(1), -math.inf)
        zmax = z.amax(1)
        # Rows whose non-targets are all masked get shift 0 (they carry no regulariser).
        zmax = torch.where(torch.isfinite(zmax), zmax, torch.zeros_like(zmax))
        z.sub_(zmax.unsqueeze(1))
        unmasked = torch.isfinite(z)
        n = unmasked.sum(1).to(cdtype)
        z.masked_fill_(~unmasked, 0.0)
        n_safe = n.clamp_min(1.0)
        m = z.sum(1) / n_safe
        z.sub_(m.unsqueeze(1)).masked_fill_(~unmasked, 0.0)  # centred
        c2 = z * z
        v = c2.sum(1) / n_safe
        m4 = (c2 * c2).sum(1) / n_safe
        m3 = c2.mul_(z).sum(1) / n_safe
        for acc, val in zip(out, (zmax, n, m, v, m3, m4)):
            acc[sl] = val
    return tuple(out)  # type: ignore[return-value]


def _evaluate(
    scores: Tensor,
    target: Tensor,
    beta: Tensor,
    shift: Tensor,
    center: Tensor,
    rows_idx: Tensor,
    has_mask: bool,
    rows: int,
) -> Tuple[Tensor, ...]:
    """Sums of :func:`_moments` at ``beta`` (one value per selected row) for the rows
    ``rows_idx`` (eager, row chunk by row chunk)."""
    out = [], [], [], [], [], []
    all_rows = rows_idx.numel() == scores.size(0)
    for sl in _chunks(rows_idx.numel(), rows):
        idx = rows_idx[sl]
        chunk = scores[sl] if all_rows else scores.index_select(0, idx)
        vals = _moments(chunk, target[idx], beta[sl], shift[idx], center[sl], has_mask)
        for acc, val in zip(out, vals):
            acc.append(val)
    return tuple(torch.cat(acc) for acc in out)  # type: ignore[return-value]


def _series_start(delta: Tensor, m2: Tensor, m3: Tensor, m4: Tensor) -> Tensor:
    """β₀ from the cumulant expansion of KL(m_β‖ū) around β = 0 (LABO.md §3, extended):
    KL ≈ κ₂β²/2 + κ₃β³/3 + κ₄β⁴/8, with κ₂ = m2, κ₃ = m3, κ₄ = m4 − 3·m2², solved by a few
    scalar Newton steps from sqrt(2δ/κ₂). Only a starting point: the exact passes follow."""
    k2 = m2.clamp_min(1e-30)
    k4 = m4 - 3.0 * m2 * m2
    b = torch.sqrt(2.0 * delta / k2).clamp(max=1.0)
    b0 = b
    for _ in range(8):
        f = b * b * (0.5 * k2 + b * (m3 / 3.0 + b * k4 / 8.0)) - delta
        fp = b * (k2 + b * (m3 + 0.5 * b * k4))
        step = b - f / fp
        b = torch.where(torch.isfinite(step) & (fp > 0), step, b).clamp(1e-6, 1.0)
    return torch.where(torch.isfinite(b), b, b0)


def _next_beta(
    b: Tensor, k: Tensor, aim: Tensor, k2: Tensor, k3: Tensor, k4: Tensor, k5: Tensor
) -> Tensor:
    """Proposed next β from one evaluation at ``b`` (KL there = ``k``): the root near ``b`` of
    the 4th-order Taylor polynomial of KL(β) − aim, whose derivatives come from the cumulants
    κⱼ of d under m_β (dKL/dβ = βκ₂, then κ₂ + βκ₃, 2κ₃ + βκ₄, 3κ₄ + βκ₅), found by Newton on
    the polynomial from a Halley start. Where that fails or jumps by more than b/2: a Halley
    step on log KL against log β. The result may be non-finite or outside [0, 1]; the caller
    safeguards it with its bracket."""
    tiny = torch.finfo(b.dtype).tiny
    f = k - aim
    c1 = b * k2
    c2 = 0.5 * (k2 + b * k3)
    c3 = (2.0 * k3 + b * k4) / 6.0
    c4 = (3.0 * k4 + b * k5) / 24.0
    h = -2.0 * f * c1 / (2.0 * c1 * c1 - 2.0 * f * c2)
    h = torch.where(torch.isfinite(h), h, -f / c1)
    for _ in range(6):
        p = f + h * (c1 + h * (c2 + h * (c3 + h * c4)))
        dp = c1 + h * (2.0 * c2 + h * (3.0 * c3 + h * 4.0 * c4))
        h = h - p / dp
    poly = b + h
    poly_ok = torch.isfinite(poly) & (h.abs() <= 0.5 * b) & (dp > 0)
    # Halley on log KL(e^t), t = log β: dKL/dt = β²κ₂, d²KL/dt² = 2β²κ₂ + β³κ₃.
    k_pos = k.clamp_min(tiny)
    g = k_pos.log() - aim.log()
    kt = b * b * k2
    g1 = kt / k_pos
    g2 = (2.0 * kt + b * b * b * k3) / k_pos - g1 * g1
    denom = 2.0 * g1 * g1 - g * g2
    halley = b * torch.exp((-2.0 * g * g1 / denom).clamp(-20.0, 20.0))
    newton = b * torch.exp(-g / g1.clamp_min(tiny))
    log_step = torch.where(torch.isfinite(halley) & (denom > 0), halley, newton)
    out = torch.where(poly_ok, poly, log_step)
    return torch.where(k > 0, out, torch.full_like(out, float("nan")))


def solve(
    scores: Tensor,
    target: Tensor,
    budget: Budget,
    *,
    tol: float = 1e-4,
    max_iter: int = 20,
    ignore_index: Optional[int] = None,
    chunk_elements: Optional[int] = None,
    compile: str = "off",
) -> LaboSolution:
    """Solves LABO's inner problem for every row of ``scores`` [N, V] (logits or log-probs).

    Rows whose target is ``ignore_index`` are skipped (β = 1, not counted as bound).
    ``tol`` bounds |KL(u*‖ū) − δ| in nats for rows where the budget binds.
    ``compile`` ("auto" / "on" / "off") selects the fused torch.compile passes of
    :mod:`labo_fairseq.fused` instead of the eager chunked ones (same results up to float
    rounding of the row sums).

    Algorithm: one pass for the statistics under ū (max, count, central moments 2–4) gives the
    start β₀ from the cumulant series; then each iteration is one pass over the still-active
    rows computing Σw·dʲ (j = 0..3), from which KL, its slope and curvature give a Halley step
    on log KL as a function of log β, safeguarded by bisection on a bracket. A row stops when
    |KL − δ| ≤ tol (with the budget proven binding), or at β = 1 when KL(p̄‖ū) ≤ δ.
    """
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"LABO solver tolerance (--labo-tol) must be a finite number > 0, got {tol}")
    if max_iter < 1:
        raise ValueError(f"LABO solver iteration cap (--labo-max-iter) must be >= 1, got {max_iter}")
    check_inputs(scores, target, ignore_index)
    scores = scores.detach()
    ignored = None if ignore_index is None else target == ignore_index
    if ignored is not None:
        # ignore_index may lie outside [0, V) (e.g. -100): give those rows a harmless index.
        target = target.masked_fill(ignored, 0)
    cdtype = compute_dtype(scores.dtype)
    n_rows, device = scores.size(0), scores.device
    rows = chunk_rows(scores, chunk_elements)
    delta = _budget_rows(budget, n_rows, device, cdtype)
    fast = _fused.use_compiled(compile, scores)

    stats = _fused.uniform_statistics(compile, scores, target) if fast else None
    if stats is None:
        fast = False
        stats = _uniform_statistics(scores, target, rows)
    shift, count, mean_u, var_u, m3_u, m4_u = stats
    has_mask = bool((count < scores.size(1) - 1).any())
    log_n = count.clamp_min(1.0).log()
    beta = torch.ones(n_rows, dtype=cdtype, device=device)
    log_norm = torch.zeros_like(beta)
    mean = torch.zeros_like(beta)
    kl = torch.zeros_like(beta)
    bound = torch.zeros(n_rows, dtype=torch.bool, device=device)
    row_iterations = torch.zeros(n_rows, dtype=torch.int32, device=device)
    # Rows with no unmasked non-target class: u* is all zero (log Σw of an empty sum).
    empty = count < 1
    log_norm[empty] = math.log(torch.finfo(cdtype).tiny)

    solvable = count > 1
    if ignored is not None:
        solvable &= ~ignored
    # δ = 0: u* = ū exactly (β = 0), also where rounding would put KL(p̄‖ū) at or below 0.
    at_uniform = solvable & (delta == 0)
    if bool(at_uniform.any()):
        beta[at_uniform] = 0.0
        log_norm[at_uniform] = log_n[at_uniform]
        mean[at_uniform] = mean_u[at_uniform]
        bound[at_uniform] = var_u[at_uniform] > 0
    active = solvable & ~at_uniform

    idx = active.nonzero().squeeze(1)
    b = _series_start(delta[idx], var_u[idx], m3_u[idx], m4_u[idx])
    # Centre of the powers in the moment pass: predicted E_m[d] at the start (series in β).
    center = (mean_u[idx] + b * var_u[idx]).clamp(max=0.0)
    lo = torch.zeros_like(b)
    hi = torch.full_like(b, 2.0)  # > 1: β = 1 not evaluated yet
    proven = torch.zeros(idx.numel(), dtype=torch.bool, device=device)  # seen KL > δ
    prev_err = torch.full_like(b, math.inf)  # |KL − δ| at the previous iterate
    iterations = 0
    while idx.numel() and iterations < max_iter:
        iterations += 1
        sums = _fused.moments(compile, scores, target, idx, b, shift, center) if fast else None
        if sums is None:
            fast = False
            sums = _evaluate(scores, target, b, shift, center, idx, has_mask, rows)
        ln, m, k2, k3, k4, k5 = _cumulants(sums, center)
        d_i, logn_i = delta[idx], log_n[idx]
        k = b * m - ln + logn_i
        f = k - d_i
        beta[idx], log_norm[idx], mean[idx], kl[idx] = b, ln, m, k
        row_iterations[idx] += 1
        at_one = b >= 1.0
        proven |= f > 0
        bound[idx] = proven
        # Converged: within tol of δ with the budget proven binding (some KL > δ seen), or
        # KL(p̄‖ū) ≤ δ at β = 1 (constraint inactive: β = 1 exactly).
        done = ((f.abs() <= tol) & proven) | (at_one & (f <= 0))
        lo = torch.where(f < 0, b, lo)
        hi = torch.where(f > 0, b, hi)
        # Aim a little above δ so that iterates tend to land on the proven-binding side.
        prop = _next_beta(b, k, d_i + 0.25 * tol, k2, k3, k4, k5)
        # Steps beyond β = 1 go to 1 while it is unexplored (hi > 1), else bisect.
        prop = prop.clamp(max=1.0)  # +inf (flat KL below δ) also goes to 1
        prop = torch.where(torch.isnan(prop), -1.0, prop)
        # Bisect when the model step leaves the bracket, or when the last step did not halve
        # |KL − δ| (the local model is poor there, e.g. where KL saturates).
        slow = f.abs() > 0.5 * prev_err
        inside = (prop > lo) & (prop < hi) & (~slow | (prop >= 1.0))  # β = 1 unexplored: try it
        new_b = torch.where(inside, prop, 0.5 * (lo + hi.clamp(max=1.0)))
        prev_err = f.abs()
        # Next centre: E_m[d] extrapolated to the new β (dE/dβ = κ₂, d²E/dβ² = κ₃).
        step = new_b - b
        center = (m + step * (k2 + 0.5 * step * k3)).clamp(max=0.0)
        center = torch.where(torch.isfinite(center), center, m)
        keep = ~done
        idx, lo, hi, b, proven = idx[keep], lo[keep], hi[keep], new_b[keep], proven[keep]
        center, prev_err = center[keep], prev_err[keep]
    return LaboSolution(
        beta, shift, log_norm, mean, kl, bound, iterations, has_mask, row_iterations, fast, count
    )


def solve_inverse_temperature(
    scores: Tensor,
    target: Tensor,
    budget: Budget,
    *,
    tol: float = 1e-4,
    max_iter: int = 20,
    **solver_kw,
) -> Tensor:
    """β = 1/T ∈ [0, 1] for every row of ``scores`` [N, V] (logits or log-probabilities)."""
    return solve(scores, target, budget, tol=tol, max_iter=max_iter, **solver_kw).beta


def labo_distribution(scores: Tensor, target: Tensor, budget: Budget, **solver_kw) -> Tensor:
    """u* [N, V] in the compute dtype: zero at each row's target, every row summing to 1
    (all-zero only for a row whose non-target classes are all masked)."""
    return distribution_from_solution(scores, target, solve(scores, target, budget, **solver_kw))


def distribution_from_solution(scores: Tensor, target: Tensor, sol: LaboSolution) -> Tensor:
    """u* [N, V] from a solution already computed for these ``scores`` (no second solve)."""
    w, _ = tempered_rows(scores.detach(), target, sol.beta, sol.shift, sol.has_mask)
    return w / w.sum(1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
