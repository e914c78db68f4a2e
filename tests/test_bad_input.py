"""Bad settings and bad data are rejected with a message naming the flag or the problem."""
from __future__ import annotations

import math

import pytest
import torch

from labo_fairseq.criterions.labo_label_smoothed_cross_entropy import (
    LaboLabelSmoothedCrossEntropyCriterion,
)
from labo_fairseq.loss import labo_label_smoothed_nll_loss
from labo_fairseq.solver import labo_distribution, solve, solve_inverse_temperature
from tests.stubs import PAD, StubModel, StubTask, stub_sample

V = 10


def _sample(t):
    return stub_sample(t, ids=torch.tensor([17, 42]))


def _criterion(**kw):
    args = dict(label_smoothing=0.1, labo_budget=0.5, labo_tol=1e-4, labo_max_iter=20)
    args.update(kw)
    return LaboLabelSmoothedCrossEntropyCriterion(StubTask(), False, **args)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, V, generator=g)
    y = torch.tensor([0, 3, 5, 9])
    return z, y


SOLVER_ENTRY_POINTS = [solve, solve_inverse_temperature, labo_distribution]


def _loss(z, y, epsilon=0.1, budget=0.5, **kw):
    return labo_label_smoothed_nll_loss(torch.log_softmax(z, -1), y, epsilon, budget, **kw)


# ---------------------------------------------------------------- α (--label-smoothing)

@pytest.mark.parametrize("alpha", [-0.1, 1.0, 1.5, math.nan])
def test_alpha_out_of_range_loss(batch, alpha):
    z, y = batch
    with pytest.raises(ValueError, match="--label-smoothing"):
        _loss(z, y, epsilon=alpha)


@pytest.mark.parametrize("alpha", [-0.1, 1.0, math.nan])
def test_alpha_out_of_range_criterion(alpha):
    with pytest.raises(ValueError, match="--label-smoothing"):
        _criterion(label_smoothing=alpha)


# ---------------------------------------------------------------- δ (--labo-budget)

@pytest.mark.parametrize("budget", [-0.1, -1, math.nan, -1e-12])
@pytest.mark.parametrize("fn", SOLVER_ENTRY_POINTS)
def test_bad_budget_solver(batch, fn, budget):
    z, y = batch
    with pytest.raises(ValueError, match="--labo-budget"):
        fn(z, y, budget)


@pytest.mark.parametrize("budget", [-0.1, math.nan])
def test_bad_budget_loss(batch, budget):
    z, y = batch
    with pytest.raises(ValueError, match="--labo-budget"):
        _loss(z, y, budget=budget)


@pytest.mark.parametrize("bad", [-0.3, math.nan])
def test_bad_budget_tensor_entry(batch, bad):
    z, y = batch
    budget = torch.tensor([0.1, bad, 0.3, 0.4])
    with pytest.raises(ValueError, match="--labo-budget"):
        solve(z, y, budget)
    with pytest.raises(ValueError, match="--labo-budget"):
        _loss(z, y, budget=budget)


def test_budget_tensor_wrong_shape(batch):
    z, y = batch
    with pytest.raises(ValueError, match="budget"):
        solve(z, y, torch.ones(3))


@pytest.mark.parametrize("budget", [-0.1, math.nan, math.inf])
def test_bad_budget_criterion(budget):
    with pytest.raises(ValueError, match="--labo-budget"):
        _criterion(labo_budget=budget)


# ---------------------------------------------------------------- tol, max_iter

@pytest.mark.parametrize("tol", [0.0, -1e-4, math.nan, math.inf])
def test_bad_tolerance(batch, tol):
    z, y = batch
    for fn in SOLVER_ENTRY_POINTS:
        with pytest.raises(ValueError, match="--labo-tol"):
            fn(z, y, 0.5, tol=tol)
    with pytest.raises(ValueError, match="--labo-tol"):
        _loss(z, y, tol=tol)
    with pytest.raises(ValueError, match="--labo-tol"):
        _criterion(labo_tol=tol)


@pytest.mark.parametrize("max_iter", [0, -3])
def test_bad_max_iter(batch, max_iter):
    z, y = batch
    for fn in SOLVER_ENTRY_POINTS:
        with pytest.raises(ValueError, match="--labo-max-iter"):
            fn(z, y, 0.5, max_iter=max_iter)
    with pytest.raises(ValueError, match="--labo-max-iter"):
        _loss(z, y, max_iter=max_iter)
    with pytest.raises(ValueError, match="--labo-max-iter"):
        _criterion(labo_max_iter=max_iter)


# ---------------------------------------------------------------- targets and shapes

@pytest.mark.parametrize("bad_target", [V, V + 7, -1, -100])
def test_target_outside_vocabulary(batch, bad_target):
    z, y = batch
    y = y.clone()
    y[2] = bad_target
    pattern = f"target index {bad_target} is outside the vocabulary"
    for fn in SOLVER_ENTRY_POINTS:
        with pytest.raises(ValueError, match=pattern):
            fn(z, y, 0.5)
    with pytest.raises(ValueError, match=pattern):
        _loss(z, y)
    # Also when padding is ignored (the bad index is not the padding index).
    with pytest.raises(ValueError, match=pattern):
        _loss(z, y, ignore_index=PAD)


def test_target_outside_vocabulary_in_criterion():
    z = torch.randn(2, 3, V)
    t = torch.tensor([[2, 3, V + 1], [4, PAD, PAD]])
    with pytest.raises(ValueError, match=f"target index {V + 1} is outside the vocabulary"):
        _criterion()(StubModel(z), _sample(t))


def test_out_of_range_ignore_index_rows_are_skipped(batch):
    z, y = batch
    y = y.clone()
    y[1] = -100
    sol = solve(z, y, 0.5, ignore_index=-100)
    assert sol.beta[1] == 1 and not sol.bound[1]


def test_bad_shapes(batch):
    z, y = batch
    with pytest.raises(ValueError, match="2-D"):
        solve(z[0], y[:1], 0.5)
    with pytest.raises(ValueError, match="target must have shape"):
        solve(z, y[:3], 0.5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        solve(z[:, :1], torch.zeros(4, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="floating-point"):
        solve(z.long(), y, 0.5)


# ---------------------------------------------------------------- non-finite logits in training

@pytest.mark.parametrize("poison", ["nan", "posinf", "masked_gold"])
def test_non_finite_logits_raise_floating_point_error_naming_the_batch(poison):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, V, generator=g)
    t = torch.tensor([[2, 3, 4], [5, 6, PAD]])
    crit = _criterion()
    # A healthy batch first: the counter in the message must say which batch failed.
    loss, _, _ = crit(StubModel(z), _sample(t))
    assert torch.isfinite(loss)
    bad = z.clone()
    if poison == "nan":
        bad[0, 1, 7] = math.nan
    elif poison == "posinf":
        bad[1, 0, 0] = math.inf
    else:  # the model masked the gold token: log p_y = −inf
        bad[0, 2, 4] = -math.inf
    with pytest.raises(FloatingPointError, match=r"batch 2\b") as info:
        crit(StubModel(bad), _sample(t))
    msg = str(info.value)
    assert "non-finite" in msg
    assert "17" in msg and "42" in msg  # the sample ids of the batch
