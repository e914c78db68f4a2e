"""The LABO training loss with fairseq's ``label_smoothed_nll_loss`` contract.

Per position, ``ℓ = −(1 − α)·log p_y − α·Σ_{k≠y} u*_k·log p_k`` with u* from the LABO solver
(LABO.md §1–3). With budget δ = 0, u* is uniform and ℓ is exactly fairseq's label smoothing.

Why a custom autograd Function: the loss needs only per-row scalars from the solver (the mean of
the log-probs under u*), and u* is a stop-gradient constant, so the gradient with respect to the
log-probs is simply ``−q = −((1 − α)·e_y + α·u*)``. The backward recomputes u* chunk by chunk from
the log-probs log_softmax already saved, instead of keeping an N × V copy of u* alive between
forward and backward; peak memory stays that of label smoothing.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from labo_fairseq import fused as labo_fused
from labo_fairseq import solver as labo_solver


# Default budget δ (nats) of the criterion and tools: the best validation BLEU of
# δ ∈ {0.25, 0.5, 1, 2, 4} on Multi30k en→de (results/sweep-multi30k-en-de.md).
DEFAULT_BUDGET = 2.0


class RowStats(NamedTuple):
    """Per-position solver results, kept for logging (no gradient flows through them)."""

    beta: Tensor  # inverse temperature 1/T; 1 for padded rows
    bound: Tensor  # True where the budget binds (KL(p̄‖ū) > δ)
    kl: Tensor  # KL(u*‖ū) reached, in nats


def check_epsilon(epsilon: float) -> None:
    """α must lie in [0, 1): at α = 1 the gold token would get no weight at all."""
    if not (0.0 <= epsilon < 1.0):
        raise ValueError(f"--label-smoothing (α) must be in [0, 1), got {epsilon}")


class _LaboSmoothedLoss(torch.autograd.Function):
    """Per-row LABO loss of ``lprobs`` [N, V]; rows whose target is ignored give 0."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        lprobs: Tensor,
        target: Tensor,
        valid: Tensor,
        epsilon: float,
        budget: labo_solver.Budget,
        tol: float,
        max_iter: int,
        ignore_index: Optional[int],
        compile: str,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        sol = labo_solver.solve(
            lprobs, target, budget, tol=tol, max_iter=max_iter, ignore_index=ignore_index,
            compile=compile,
        )
        target = target.masked_fill(~valid, 0)
        cdtype = sol.beta.dtype
        gold = lprobs.gather(1, target.unsqueeze(1)).squeeze(1).to(cdtype)
        # Σ_k u*_k·log p_k = shift + E_{u*}[lp − shift]; zero for rows with no unmasked class.
        expected = sol.shift + sol.mean_shifted
        loss = -(1.0 - epsilon) * gold - epsilon * expected
        loss = torch.where(valid, loss, torch.zeros_like(loss))
        ctx.save_for_backward(lprobs, target, valid, sol.beta, sol.shift, sol.log_norm)
        ctx.epsilon, ctx.has_mask = epsilon, sol.has_mask
        ctx.compile = compile if sol.compiled else "off"
        ctx.mark_non_differentiable(sol.beta, sol.bound)
        return loss.to(lprobs.dtype), sol.beta, sol.bound, sol.kl

    @staticmethod
    def backward(ctx, grad_loss: Tensor, *_unused: Tensor):  # type: ignore[override]
        lprobs, target, valid, beta, shift, log_norm = ctx.saved_tensors
        eps = ctx.epsilon
        g = torch.where(valid, grad_loss.to(beta.dtype), torch.zeros_like(beta))
        if ctx.compile != "off":
            # One fused pass: exp, scale and the target column, written straight to the output.
            grad = labo_fused.labo_grad(
                ctx.compile, lprobs, target, beta, shift, log_norm, g, float(eps)
            )
            if grad is not None:
                return grad, None, None, None, None, None, None, None, None
        grad = torch.empty_like(lprobs)
        rows = labo_solver.chunk_rows(lprobs)
        for start in range(0, lprobs.size(0), rows):
            sl = slice(start, min(start + rows, lprobs.size(0)))
            grad[sl] = _minus_g_q(lprobs, target, beta, shift, log_norm, g, eps, ctx.has_mask, sl)
        return grad, None, None, None, None, None, None, None, None


def _minus_g_q(scores: Tensor, target: Tensor, beta: Tensor, shift: Tensor, log_norm: Tensor,
               g: Tensor, eps: float, has_mask: bool, sl: slice) -> Tensor:
    """−g·q = −g·(α·u* + (1 − α)·e_y) for the rows ``sl``, a fresh chunk in the compute dtype;
    u* = w / Σw is rebuilt from the solution (Σw = exp(log_norm)). The eager backward of both
    autograd Functions."""
    w, _ = labo_solver.tempered_rows(scores[sl], target[sl], beta[sl], shift[sl], has_mask)
    w.mul_((-eps * g[sl] * torch.exp(-log_norm[sl])).unsqueeze(1))
    w.scatter_add_(1, target[sl].unsqueeze(1), (-(1.0 - eps) * g[sl]).unsqueeze(1))
    return w


def _logsumexp_rows(logits: Tensor, compile: str) -> Tensor:
    """log Σ exp(z) per row in the compute dtype, fused when compiled, else row chunk by chunk."""
    if labo_fused.use_compiled(compile, logits):
        out = labo_fused.logsumexp(compile, logits)
        if out is not None:
            return out
    cdtype = labo_solver.compute_dtype(logits.dtype)
    out = torch.empty(logits.size(0), dtype=cdtype, device=logits.device)
    rows = labo_solver.chunk_rows(logits)
    for start in range(0, logits.size(0), rows):
        sl = slice(start, min(start + rows, logits.size(0)))
        out[sl] = torch.logsumexp(logits[sl].to(cdtype), dim=1)
    return out


class _LaboSmoothedLossFromLogits(torch.autograd.Function):
    """Per-row LABO loss of raw ``logits`` [N, V] (log-softmax folded in); ignored rows give 0.

    Same loss as :class:`_LaboSmoothedLoss` on ``log_softmax(logits)``, but no N × V log-prob
    tensor is ever written: the forward needs the per-row normaliser (one read) besides the
    solver (u* is shift-invariant, so it solves on the logits directly), and the backward writes
    ``g·(p·Σq − q)`` in one pass instead of a gradient w.r.t. the log-probs followed by
    log_softmax's own backward. Σq is 1, or 1 − α on a row with no unmasked non-target class.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        logits: Tensor,
        target: Tensor,
        valid: Tensor,
        epsilon: float,
        budget: labo_solver.Budget,
        tol: float,
        max_iter: int,
        ignore_index: Optional[int],
        compile: str,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        sol = labo_solver.solve(
            logits, target, budget, tol=tol, max_iter=max_iter, ignore_index=ignore_index,
            compile=compile,
        )
        lse = _logsumexp_rows(logits, compile)
        target = target.masked_fill(~valid, 0)
        gold = logits.gather(1, target.unsqueeze(1)).squeeze(1).to(lse.dtype) - lse
        # Σ_k u*_k·log p_k = shift + E_{u*}[z − shift] − lse (no mass where the support is empty).
        has_support = sol.support >= 1
        expected = torch.where(has_support, sol.shift + sol.mean_shifted - lse, torch.zeros_like(lse))
        loss = torch.where(valid, -(1.0 - epsilon) * gold - epsilon * expected, torch.zeros_like(lse))
        nll = torch.where(valid, -gold, torch.zeros_like(gold))
        q_mass = torch.ones_like(lse).masked_fill_(~has_support, 1.0 - epsilon)
        ctx.save_for_backward(logits, target, valid, sol.beta, sol.shift, sol.log_norm, lse, q_mass)
        ctx.epsilon, ctx.has_mask = epsilon, sol.has_mask
        ctx.compile = compile if sol.compiled else "off"
        ctx.mark_non_differentiable(nll, sol.beta, sol.bound, sol.kl)
        # In the compute dtype (float32 for fp16/bf16 logits), like fairseq's upcast log_softmax.
        return loss, nll, sol.beta, sol.bound, sol.kl

    @staticmethod
    def backward(ctx, grad_loss: Tensor, *_unused: Tensor):  # type: ignore[override]
        logits, target, valid, beta, shift, log_norm, lse, q_mass = ctx.saved_tensors
        eps = ctx.epsilon
        g = torch.where(valid, grad_loss.to(beta.dtype), torch.zeros_like(beta))
        none = (None,) * 8
        if ctx.compile != "off":
            grad = labo_fused.labo_logits_grad(
                ctx.compile, logits, target, beta, shift, log_norm, lse, g, q_mass, float(eps)
            )
            if grad is not None:
                return (grad, *none)
        grad = torch.empty_like(logits)
        rows = labo_solver.chunk_rows(logits)
        for start in range(0, logits.size(0), rows):
            sl = slice(start, min(start + rows, logits.size(0)))
            w = _minus_g_q(logits, target, beta, shift, log_norm, g, eps, ctx.has_mask, sl)
            p = torch.exp(logits[sl].to(w.dtype) - lse[sl].unsqueeze(1))
            grad[sl] = w.add_(p.mul_((g[sl] * q_mass[sl]).unsqueeze(1)))  # + g·Σq·softmax(z)
        return (grad, *none)


def _flat_inputs(scores: Tensor, target: Tensor, budget: labo_solver.Budget,
                 ignore_index: Optional[int]):
    """fairseq's shape rules: (scores [N, V], target [N], budget (float or [N]), valid [N],
    unreduced output shape).

    The target gets a trailing singleton dim; unreduced outputs keep it when ignore_index is
    given and drop it otherwise."""
    target_1 = target if target.dim() == scores.dim() else target.unsqueeze(-1)
    out_shape = target_1.shape if ignore_index is not None else target_1.shape[:-1]
    flat_target = target_1.reshape(-1)
    if ignore_index is None:
        valid = torch.ones_like(flat_target, dtype=torch.bool)
    else:
        valid = flat_target != ignore_index
    if isinstance(budget, Tensor):
        budget = budget.reshape(-1)
    return scores.reshape(-1, scores.size(-1)), flat_target, budget, valid, out_shape


def _shaped(loss: Tensor, nll_loss: Tensor, stats: RowStats, reduce: bool,
            out_shape: torch.Size) -> Tuple[Tensor, Tensor, RowStats]:
    """Summed, or per position in fairseq's unreduced shape."""
    if reduce:
        return loss.sum(), nll_loss.sum(), stats
    return loss.view(out_shape), nll_loss.view(out_shape), stats


def labo_smoothed_loss_from_logits(
    logits: Tensor,
    target: Tensor,
    epsilon: float,
    budget: labo_solver.Budget,
    ignore_index: Optional[int] = None,
    reduce: bool = True,
    *,
    tol: float = 1e-4,
    max_iter: int = 20,
    compile: str = "auto",
) -> Tuple[Tensor, Tensor, RowStats]:
    """(loss, nll_loss, stats) of :func:`labo_label_smoothed_nll_loss_with_stats` applied to
    ``log_softmax(logits.float())``, computed from the logits without materialising log-probs.

    This is the criterion's fast path for models whose normalised output is the plain
    log-softmax of their logits (fairseq's default); the gradient w.r.t. the logits is p − q.
    """
    check_epsilon(epsilon)
    flat_logits, flat_target, budget, valid, out_shape = _flat_inputs(
        logits, target, budget, ignore_index
    )
    loss, nll_loss, beta, bound, kl = _LaboSmoothedLossFromLogits.apply(
        flat_logits, flat_target, valid, float(epsilon), budget, tol, max_iter, ignore_index,
        compile,
    )
    return _shaped(loss, nll_loss, RowStats(beta, bound, kl), reduce, out_shape)


def labo_label_smoothed_nll_loss_with_stats(
    lprobs: Tensor,
    target: Tensor,
    epsilon: float,
    budget: labo_solver.Budget,
    ignore_index: Optional[int] = None,
    reduce: bool = True,
    *,
    tol: float = 1e-4,
    max_iter: int = 20,
    compile: str = "auto",
) -> Tuple[Tensor, Tensor, RowStats]:
    """:func:`labo_label_smoothed_nll_loss` plus per-row solver results for diagnostics.

    The stats cover all positions flattened (padded ones have β = 1 and are not bound).
    """
    check_epsilon(epsilon)
    flat_lprobs, flat_target, budget, valid, out_shape = _flat_inputs(
        lprobs, target, budget, ignore_index
    )
    loss, beta, bound, kl = _LaboSmoothedLoss.apply(
        flat_lprobs, flat_target, valid, float(epsilon), budget, tol, max_iter, ignore_index,
        compile,
    )
    # ignore_index may lie outside [0, V) (e.g. -100): gather padded rows at a harmless index.
    safe_target = flat_target.masked_fill(~valid, 0)
    nll_loss = -flat_lprobs.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    nll_loss = torch.where(valid, nll_loss, torch.zeros_like(nll_loss))
    return _shaped(loss, nll_loss, RowStats(beta, bound, kl), reduce, out_shape)


def labo_label_smoothed_nll_loss(
    lprobs: Tensor,
    target: Tensor,
    epsilon: float,
    budget: labo_solver.Budget,
    ignore_index: Optional[int] = None,
    reduce: bool = True,
    **solver_kw,
) -> Tuple[Tensor, Tensor]:
    """(loss, nll_loss) like fairseq's ``label_smoothed_nll_loss``, with u = u* (LABO).

    ``lprobs`` [..., V] log-probabilities, ``target`` [...] class indices, ``epsilon`` = α ∈ [0, 1),
    ``budget`` = δ ≥ 0 in nats (float or one value per position). Solver keywords: ``tol``,
    ``max_iter``, ``compile`` ("auto"/"on"/"off": fused torch.compile kernels, see
    :mod:`labo_fairseq.fused`). The gradient with respect to the logits is p − q with u* held constant.
    """
    loss, nll_loss, _ = labo_label_smoothed_nll_loss_with_stats(
        lprobs, target, epsilon, budget, ignore_index, reduce, **solver_kw
    )
    return loss, nll_loss


