"""The LABO loss (labo_fairseq.loss.labo_label_smoothed_nll_loss) and the criterion's forward.

- δ = 0 must be fairseq's label smoothing (``label_smoothed_nll_loss``) to float precision, with
  the same output shapes (reduce True/False, with/without ignore_index, 2-D and 3-D lprobs).
- The gradient with respect to the logits (through log_softmax) is p − q with
  q = (1 − α)·e_y + α·u*, u* held constant (LABO.md §3).
- Padded positions contribute nothing to the loss or the gradient.
- The criterion's fast path from the logits equals log_softmax followed by the log-prob loss.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    label_smoothed_nll_loss,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as ref  # noqa: E402
from stubs import PAD, StubModel, StubTask, stub_sample  # noqa: E402

from labo_fairseq.criterions.labo_label_smoothed_cross_entropy import (  # noqa: E402
    LaboLabelSmoothedCrossEntropyCriterion,
)
from labo_fairseq.loss import (  # noqa: E402
    labo_label_smoothed_nll_loss,
    labo_label_smoothed_nll_loss_with_stats,
    labo_smoothed_loss_from_logits,
)
from labo_fairseq.solver import labo_distribution  # noqa: E402



def make_logits(shape, vocab, std, seed, dtype=torch.float32, pad_tail=True):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, vocab, generator=g) * std).to(dtype)
    t = torch.randint(0, vocab, shape, generator=g)
    t[t == PAD] = PAD + 1
    if pad_tail:
        # pad the tail of the last "sentence" (or the last rows of a 2-D batch)
        t.view(-1, shape[-1])[-1, shape[-1] // 2 :] = PAD
    return x, t


def rel_close(a, b, rtol):
    a, b = a.double(), b.double()
    assert a.shape == b.shape, f"shape {tuple(a.shape)} vs fairseq {tuple(b.shape)}"
    scale = b.abs().clamp_min(1e-12)
    err = ((a - b).abs() / scale).max() if a.numel() else torch.tensor(0.0)
    assert err <= rtol, f"max relative error {float(err):.3e}"


# --------------------------------------------------------------------------------------------
# δ = 0 is fairseq's label smoothing
# --------------------------------------------------------------------------------------------

SHAPES = {"2d": (24,), "3d": (3, 8)}


def _expected_shape_mismatch(shape_name, ignore_index, reduce):
    return shape_name == "3d" and ignore_index is not None and not reduce


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("ignore_index", [None, PAD])
@pytest.mark.parametrize("reduce", [True, False])
@pytest.mark.parametrize("shape_name", ["2d", "3d"])
def test_zero_budget_equals_fairseq_label_smoothing(shape_name, reduce, ignore_index, epsilon,
                                                    dtype):
    x, t = make_logits(SHAPES[shape_name], 500, 4.0, seed=1, dtype=dtype)
    lprobs = torch.log_softmax(x, -1)
    loss, nll = labo_label_smoothed_nll_loss(lprobs, t, epsilon, 0.0, ignore_index=ignore_index,
                                             reduce=reduce)
    ref_loss, ref_nll = label_smoothed_nll_loss(lprobs, t, epsilon, ignore_index=ignore_index,
                                                reduce=reduce)
    assert loss.dtype == ref_loss.dtype
    if _expected_shape_mismatch(shape_name, ignore_index, reduce):
        # Values are compared here; shapes are covered by the shape tests below.
        loss, nll = loss.reshape(ref_loss.shape), nll.reshape(ref_nll.shape)
    rel_close(loss, ref_loss, 1e-6)
    rel_close(nll, ref_nll, 1e-6)


def test_unreduced_shape_3d_with_ignore_index():
    x, t = make_logits((3, 8), 50, 1.0, seed=2)
    lprobs = torch.log_softmax(x, -1)
    loss, nll = labo_label_smoothed_nll_loss(lprobs, t, 0.1, 0.0, ignore_index=PAD, reduce=False)
    ref_loss, ref_nll = label_smoothed_nll_loss(lprobs, t, 0.1, ignore_index=PAD, reduce=False)
    assert ref_loss.shape == (3, 8, 1)
    assert loss.shape == ref_loss.shape and nll.shape == ref_nll.shape


def test_unreduced_shape_target_with_trailing_dim():
    x, t = make_logits((12,), 50, 1.0, seed=3, pad_tail=False)
    lprobs = torch.log_softmax(x, -1)
    t = t.unsqueeze(-1)
    loss, nll = labo_label_smoothed_nll_loss(lprobs, t, 0.1, 0.0, reduce=False)
    ref_loss, ref_nll = label_smoothed_nll_loss(lprobs, t, 0.1, reduce=False)
    assert ref_loss.shape == (12,)
    assert loss.shape == ref_loss.shape and nll.shape == ref_nll.shape


def test_trailing_dim_target_values_match():
    """Values agree for a [N, 1] target (shape covered by the test above)."""
    x, t = make_logits((12,), 50, 1.0, seed=3)
    lprobs = torch.log_softmax(x, -1)
    t = t.unsqueeze(-1)
    for ignore_index in (None, PAD):
        for reduce in (True, False):
            loss, nll = labo_label_smoothed_nll_loss(lprobs, t, 0.2, 0.0,
                                                     ignore_index=ignore_index, reduce=reduce)
            ref_loss, ref_nll = label_smoothed_nll_loss(lprobs, t, 0.2,
                                                        ignore_index=ignore_index, reduce=reduce)
            rel_close(loss.reshape(ref_loss.shape), ref_loss, 1e-6)
            rel_close(nll.reshape(ref_nll.shape), ref_nll, 1e-6)


# --------------------------------------------------------------------------------------------
# Loss value and gradient for δ > 0
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("delta", [0.0, 1e-3, 0.5, 1.0, 20.0])
@pytest.mark.parametrize("epsilon", [0.1, 0.4])
def test_value_and_gradient_are_p_minus_q(delta, epsilon):
    x, t = make_logits((4, 6), 300, 3.0, seed=4, dtype=torch.float64)
    x.requires_grad_(True)
    lprobs = torch.log_softmax(x, -1)
    loss, nll = labo_label_smoothed_nll_loss(lprobs, t, epsilon, delta, ignore_index=PAD)
    loss.backward()

    flat_x, flat_t = x.detach().reshape(-1, 300), t.reshape(-1)
    valid = flat_t != PAD
    lp = torch.log_softmax(flat_x, -1)
    u = labo_distribution(flat_x, flat_t, delta).double()
    q = (1 - epsilon) * torch.nn.functional.one_hot(flat_t, 300).double() + epsilon * u
    p = lp.exp()
    expected_grad = torch.where(valid.unsqueeze(1), p - q, torch.zeros_like(p))
    torch.testing.assert_close(x.grad.reshape(-1, 300), expected_grad, atol=1e-10, rtol=1e-7)
    expected_loss = torch.where(valid, -(q * lp).sum(1), torch.zeros(()))
    torch.testing.assert_close(loss, expected_loss.sum(), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(nll, torch.where(valid, -lp[torch.arange(lp.size(0)), flat_t],
                                                torch.zeros(())).sum())

    # Against the independent reference u* (differs only by the solver's KL tolerance).
    u_ref = ref.distribution(flat_x, flat_t, delta)
    q_ref = (1 - epsilon) * torch.nn.functional.one_hot(flat_t, 300).double() + epsilon * u_ref
    grad_ref = torch.where(valid.unsqueeze(1), p - q_ref, torch.zeros_like(p))
    assert (x.grad.reshape(-1, 300) - grad_ref).abs().sum(1).max() <= 4e-3 * epsilon + 1e-12
    loss_ref = torch.where(valid, -(q_ref * lp).sum(1), torch.zeros(())).sum()
    torch.testing.assert_close(loss.detach(), loss_ref, atol=0, rtol=1e-3)


def test_unreduced_gradient_with_upstream_weights():
    x, t = make_logits((16,), 200, 2.0, seed=5, dtype=torch.float64)
    x.requires_grad_(True)
    loss, _ = labo_label_smoothed_nll_loss(torch.log_softmax(x, -1), t, 0.2, 0.4, reduce=False)
    assert loss.shape == (16,)
    w = torch.linspace(-1, 2, 16, dtype=torch.float64)
    (loss * w).sum().backward()
    u = labo_distribution(x.detach(), t, 0.4).double()
    q = 0.8 * torch.nn.functional.one_hot(t, 200).double() + 0.2 * u
    expected = w.unsqueeze(1) * (torch.softmax(x.detach(), -1) - q)
    torch.testing.assert_close(x.grad, expected, atol=1e-10, rtol=1e-7)


def test_custom_backward_matches_finite_differences_at_zero_budget():
    """The custom backward against finite differences. With δ = 0, u* = ū does not depend on the
    logits, so the stop-gradient is exact and the full derivative must be p − q."""
    x, t = make_logits((3,), 12, 1.0, seed=6, dtype=torch.float64, pad_tail=False)
    x.requires_grad_(True)

    def f(inp):
        return labo_label_smoothed_nll_loss(torch.log_softmax(inp, -1), t, 0.3, 0.0)[0]

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7)


def test_padding_contributes_nothing():
    x, t = make_logits((2, 10), 100, 3.0, seed=7)
    t[0, 7:] = PAD
    x.requires_grad_(True)
    # Put garbage-but-finite logits at the padded positions: nothing may leak from them.
    with torch.no_grad():
        x[1, 5:] *= 100
        t[1, 5:] = PAD
    loss, nll = labo_label_smoothed_nll_loss(torch.log_softmax(x, -1), t, 0.1, 0.5,
                                             ignore_index=PAD)
    loss.backward()
    pad = t == PAD
    assert (x.grad[pad] == 0).all()
    assert (x.grad[~pad].abs().sum(-1) > 0).all()
    keep_x = x.detach()[~pad]
    loss_kept, nll_kept = labo_label_smoothed_nll_loss(torch.log_softmax(keep_x, -1), t[~pad],
                                                       0.1, 0.5)
    torch.testing.assert_close(loss.detach(), loss_kept, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(nll.detach(), nll_kept, rtol=1e-6, atol=1e-6)
    # Unreduced: exact zeros at the padded positions.
    per_pos, per_nll = labo_label_smoothed_nll_loss(torch.log_softmax(x.detach(), -1), t, 0.1, 0.5,
                                                    ignore_index=PAD, reduce=False)
    assert (per_pos.reshape(-1)[pad.reshape(-1)] == 0).all()
    assert (per_nll.reshape(-1)[pad.reshape(-1)] == 0).all()


def test_per_position_budget_tensor():
    x, t = make_logits((2, 5), 80, 3.0, seed=8, pad_tail=False)
    budget = torch.tensor([[0.0, 0.1, 0.5, 1.0, 3.0], [0.01, 0.2, 0.3, 0.7, 10.0]])
    lprobs = torch.log_softmax(x, -1)
    per_pos, _ = labo_label_smoothed_nll_loss(lprobs, t, 0.2, budget, reduce=False)
    for i in range(2):
        for j in range(5):
            one, _ = labo_label_smoothed_nll_loss(lprobs[i, j][None], t[i, j][None], 0.2,
                                                  float(budget[i, j]), reduce=False)
            torch.testing.assert_close(per_pos[i, j], one[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits(dtype):
    x32, t = make_logits((3, 8), 1000, 4.0, seed=9)
    x = x32.to(dtype).requires_grad_(True)
    loss, nll = labo_label_smoothed_nll_loss(torch.log_softmax(x, -1), t, 0.1, 0.5,
                                             ignore_index=PAD)
    assert torch.isfinite(loss) and torch.isfinite(nll)
    loss.backward()
    assert x.grad is not None and x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    # Close to the float32 answer on the same (rounded) logits.
    xr = x.detach().float().requires_grad_(True)
    loss32, _ = labo_label_smoothed_nll_loss(torch.log_softmax(xr, -1), t, 0.1, 0.5,
                                             ignore_index=PAD)
    loss32.backward()
    torch.testing.assert_close(loss.float(), loss32, rtol=2e-2, atol=0)
    torch.testing.assert_close(x.grad.float(), xr.grad, rtol=0, atol=2e-2)


def test_extreme_and_masked_logits_give_finite_loss():
    x, t = make_logits((2, 6), 50, 1.0, seed=10, pad_tail=False)
    x = x * 1e4
    x[..., 3] = -float("inf")
    t[t == 3] = 4
    x.requires_grad_(True)
    loss, _ = labo_label_smoothed_nll_loss(torch.log_softmax(x, -1), t, 0.1, 0.5)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad[..., 3] == 0).all()


# --------------------------------------------------------------------------------------------
# From logits (the criterion's fast path) equals log_softmax + the log-prob loss
# --------------------------------------------------------------------------------------------

def _from_both_paths(x, t, budget, ignore_index, reduce, compile, mask=None):
    """(loss, nll, grad, stats) of the logits path and of the log-prob path on the same logits."""
    out = []
    for from_logits in (True, False):
        leaf = x.detach().clone().requires_grad_(True)
        z = leaf if mask is None else leaf.masked_fill(mask, -float("inf"))
        if from_logits:
            loss, nll, stats = labo_smoothed_loss_from_logits(
                z, t, 0.1, budget, ignore_index=ignore_index, reduce=reduce, compile=compile)
        else:
            lprobs = torch.log_softmax(z.float() if z.dtype != torch.float64 else z, -1)
            loss, nll, stats = labo_label_smoothed_nll_loss_with_stats(
                lprobs, t, 0.1, budget, ignore_index=ignore_index, reduce=reduce, compile=compile)
        loss.sum().backward()
        out.append((loss, nll, leaf.grad, stats))
    return out


@pytest.mark.parametrize("compile", ["off", "on"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduce", [True, False])
def test_from_logits_matches_log_prob_path(compile, dtype, reduce):
    if compile == "on" and dtype == torch.float64:
        pytest.skip("compiled kernels are float32")
    x, t = make_logits((3, 8), 500, 3.0, seed=21, dtype=dtype)
    (loss, nll, grad, stats), (ref_loss, ref_nll, ref_grad, ref_stats) = _from_both_paths(
        x, t, 1.0, PAD, reduce, compile)
    assert loss.shape == ref_loss.shape and nll.shape == ref_nll.shape
    assert loss.dtype == ref_loss.dtype and grad.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(loss, ref_loss, rtol=tol, atol=tol)
    torch.testing.assert_close(nll, ref_nll, rtol=tol, atol=tol)
    torch.testing.assert_close(stats.beta, ref_stats.beta, rtol=1e-4, atol=1e-6)
    half = dtype in (torch.bfloat16, torch.float16)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-2 if half else tol, atol=1e-3 if half else tol)


@pytest.mark.parametrize("compile", ["off", "on"])
def test_from_logits_masked_classes_empty_support_and_ignore_index(compile):
    x, t = make_logits((40,), 300, 3.0, seed=22, pad_tail=False)
    t[t >= 200] = 3
    t[:4] = -100
    mask = torch.zeros(40, 300, dtype=torch.bool)
    mask[:, 200:] = True
    mask[7] = True
    mask[7, t[7]] = False  # row 7: only the gold class is left, u* has no support
    (loss, nll, grad, _), (ref_loss, ref_nll, ref_grad, _) = _from_both_paths(
        x, t, 0.5, -100, False, compile, mask)
    assert torch.isfinite(loss).all() and (loss[:4] == 0).all() and (grad[:4] == 0).all()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nll, ref_nll, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    assert (grad[:, 200:] == 0).all() and grad[7].abs().max() < 1e-6


# --------------------------------------------------------------------------------------------
# The criterion's forward (stub model, no fairseq model needed)
# --------------------------------------------------------------------------------------------

def test_criterion_zero_budget_matches_fairseq_criterion():
    x, t = make_logits((3, 7), 120, 3.0, seed=11)
    model, sample = StubModel(x), stub_sample(t)
    labo = LaboLabelSmoothedCrossEntropyCriterion(StubTask(), False, 0.1, labo_budget=0.0)
    fair = LabelSmoothedCrossEntropyCriterion(StubTask(), False, 0.1)
    loss, size, log = labo(model, sample)
    ref_loss, ref_size, ref_log = fair(model, sample)
    rel_close(loss, ref_loss, 1e-6)
    rel_close(log["nll_loss"], ref_log["nll_loss"], 1e-6)
    assert size == ref_size == sample["ntokens"]
    assert log["labo_positions"] == sample["ntokens"]


def test_criterion_forward_matches_loss_function():
    x, t = make_logits((3, 7), 120, 3.0, seed=12)
    x.requires_grad_(True)
    model, sample = StubModel(x), stub_sample(t)
    crit = LaboLabelSmoothedCrossEntropyCriterion(StubTask(), False, 0.2, labo_budget=0.3)
    loss, _, log = crit(model, sample)
    expected, nll = labo_label_smoothed_nll_loss(torch.log_softmax(x.float(), -1).view(-1, 120),
                                                 t.view(-1), 0.2, 0.3, ignore_index=PAD)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(log["nll_loss"], nll)
    assert 0 <= log["labo_bound"] <= log["labo_positions"]
    loss.backward()
    assert torch.isfinite(x.grad).all() and (x.grad[t == PAD] == 0).all()
    # compute_loss agrees with forward.
    closs, cnll = crit.compute_loss(model, model(**sample["net_input"]), sample)
    torch.testing.assert_close(closs, expected)
    torch.testing.assert_close(cnll, nll)
