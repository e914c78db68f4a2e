"""The LABO solver's public API against the independent float64 bisection reference.

Public API under test (labo_fairseq.solver): ``solve``, ``solve_inverse_temperature``,
``labo_distribution``. The reference (tests/reference.py) shares no code with the solver.

Tolerances: the solver stops when |KL(u*‖ū) − δ| ≤ tol (default 1e-4 nats) with its moments
computed in float32, so the KL of the returned β, re-evaluated in float64, may exceed δ by tol plus
float32 rounding (KL_SLACK). u* is checked tightly against the float64 tempered softmax *at the
solver's own β* (pure evaluation error), and loosely (total variation) against the reference's β*,
the difference there coming from the stopping tolerance alone.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as ref  # noqa: E402

from labo_fairseq.solver import (  # noqa: E402
    labo_distribution,
    solve,
    solve_inverse_temperature,
)

TOL = 1e-4
KL_SLACK = 5e-6  # float32 rounding of the solver's own KL estimate
MARGIN = 1e-5  # rows with KL(p̄‖ū) this close to δ may legitimately go either way
TV_TOL = 2e-3  # total variation u* vs reference u*, allowed by the KL stopping tolerance


def make_case(n_rows: int, vocab: int, std: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_rows, vocab, generator=g) * std
    y = torch.randint(0, vocab, (n_rows,), generator=g)
    return z, y


def check_against_reference(z, y, delta, *, tol=TOL, scores=None, **solver_kw):
    """All properties of LABO.md §3 for one batch; ``scores`` (default z) is what the solver sees,
    z (float64-able) is the exact input the reference uses."""
    scores = z if scores is None else scores
    n_rows, vocab = z.shape
    sol = solve(scores, y, delta, tol=tol, **solver_kw)
    beta = solve_inverse_temperature(scores, y, delta, tol=tol, **solver_kw)
    u = labo_distribution(scores, y, delta, tol=tol, **solver_kw)
    delta_rows = torch.as_tensor(delta, dtype=torch.float64).expand(n_rows)

    # Public results agree with each other and have the documented dtypes / shapes.
    assert beta.shape == (n_rows,) and u.shape == (n_rows, vocab)
    assert beta.dtype in (torch.float32, torch.float64)
    assert u.dtype in (torch.float32, torch.float64)
    assert torch.equal(beta, sol.beta)
    assert torch.isfinite(beta).all() and torch.isfinite(u).all()
    assert ((beta >= 0) & (beta <= 1)).all()

    # u* is a distribution over the non-targets.
    rows = torch.arange(n_rows)
    assert (u[rows, y] == 0).all()
    assert (u >= 0).all()
    torch.testing.assert_close(u.double().sum(1), torch.ones(n_rows, dtype=torch.float64),
                               atol=1e-5, rtol=0)

    # Active / inactive constraint.
    kl_pbar = ref.kl_to_uniform(z, y, torch.ones(n_rows, dtype=torch.float64))
    binds = kl_pbar > delta_rows + MARGIN
    free = kl_pbar < delta_rows - MARGIN
    assert (beta[free] == 1).all(), "β must be exactly 1 where KL(p̄‖ū) ≤ δ"
    assert (sol.bound[binds]).all() and not (sol.bound[free]).any()
    kl_at_beta = ref.kl_to_uniform(z, y, beta.double())
    err = (kl_at_beta - delta_rows)[binds].abs()
    zero_budget = binds & (delta_rows == 0)
    # δ = 0 gives exactly uniform (β = 0); otherwise KL(u*‖ū) = δ within tol.
    assert (beta[zero_budget] == 0).all()
    assert err.numel() == 0 or err.max() <= tol + KL_SLACK, f"max |KL−δ| = {err.max():.3e}"
    # The reported KL is the one reached.
    torch.testing.assert_close(sol.kl.double()[binds], kl_at_beta[binds], atol=tol, rtol=0)
    assert 0 <= sol.iterations <= solver_kw.get("max_iter", 20)

    # u* ∝ exp(β·z) over the non-targets: tight against float64 at the solver's own β ...
    torch.testing.assert_close(u.double(), ref.tempered(z, y, beta.double()), atol=1e-6, rtol=1e-4)
    # ... and close to the reference solution.
    beta_ref = ref.solve_beta(z, y, delta)
    u_ref = ref.tempered(z, y, beta_ref)
    tv = 0.5 * (u.double() - u_ref).abs().sum(1)
    assert tv.max() <= TV_TOL, f"total variation to the reference {tv.max():.3e}"
    torch.testing.assert_close(beta.double()[free], beta_ref[free], atol=0, rtol=0)

    # Log-ratio linearity: log u*_k − β·z_k is the same for every non-target k (where u* > 0).
    zd = z.double()
    logu = u.double().log()
    resid = logu - beta.double().unsqueeze(1) * zd
    usable = (u.double() > 1e-30) & torch.isfinite(zd)
    usable[rows, y] = False
    for i in range(n_rows):
        r = resid[i][usable[i]]
        if r.numel() < 2:
            continue
        spread = float(zd[i][usable[i]].max() - zd[i][usable[i]].min())
        assert float(r.max() - r.min()) <= 1e-5 * (1 + float(beta[i]) * spread) + 1e-6
    return sol, u


GRID_DELTAS = ["zero", "small", "half", "one", "logv"]


def delta_value(name: str, vocab: int) -> float:
    return {"zero": 0.0, "small": 1e-3, "half": 0.5, "one": 1.0,
            "logv": math.log(vocab - 1)}[name]


STDS = [0.1, 1.0, 5.0, 30.0]


def mixed_scale_case(rows_per_std: int, vocab: int, seed: int):
    """One batch whose rows come in groups of logit scale std 0.1, 1, 5 and 30."""
    parts = [make_case(rows_per_std, vocab, std, seed + k) for k, std in enumerate(STDS)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@pytest.mark.parametrize("delta_name", GRID_DELTAS)
@pytest.mark.parametrize("vocab,rows_per_std", [(3, 8), (10, 8), (1000, 3)])
def test_matches_reference(vocab, rows_per_std, delta_name):
    z, y = mixed_scale_case(rows_per_std, vocab, seed=vocab)
    check_against_reference(z, y, delta_value(delta_name, vocab))


@pytest.mark.slow
@pytest.mark.parametrize("delta_name", GRID_DELTAS)
@pytest.mark.parametrize("std", STDS)
@pytest.mark.parametrize("vocab,n_rows", [(3, 32), (10, 32), (1000, 12)])
def test_matches_reference_one_scale(vocab, n_rows, std, delta_name):
    z, y = make_case(n_rows, vocab, std, seed=vocab * 100 + int(std * 10))
    check_against_reference(z, y, delta_value(delta_name, vocab))


def test_matches_reference_30k_vocab():
    z, y = make_case(2, 30000, 5.0, seed=7)
    check_against_reference(z, y, 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("delta_name", GRID_DELTAS)
@pytest.mark.parametrize("std", [0.1, 1.0, 5.0, 30.0])
def test_matches_reference_30k_vocab_full_grid(std, delta_name):
    z, y = make_case(4, 30000, std, seed=11)
    check_against_reference(z, y, delta_value(delta_name, 30000))


@pytest.mark.slow
@pytest.mark.parametrize("delta", [1e-3, 0.5, 2.0])
def test_matches_reference_many_rows(delta):
    # Several chunks of rows (the solver works row-chunk by row-chunk).
    z, y = make_case(600, 1000, 3.0, seed=3)
    check_against_reference(z, y, delta)


def test_tighter_tolerance_gets_closer():
    z, y = make_case(16, 1000, 2.0, seed=5)
    beta = solve_inverse_temperature(z, y, 0.7, tol=1e-6, max_iter=50)
    beta_ref = ref.solve_beta(z, y, 0.7)
    kl = ref.kl_to_uniform(z, y, beta.double())
    binds = ref.kl_to_uniform(z, y, torch.ones(16, dtype=torch.float64)) > 0.7
    assert binds.any()
    assert (kl - 0.7)[binds].abs().max() <= 1e-6 + KL_SLACK
    torch.testing.assert_close(beta.double(), beta_ref, atol=1e-5, rtol=0)


def test_zero_budget_is_exactly_uniform():
    z, y = make_case(16, 1000, 1.0, seed=1)
    sol = solve(z, y, 0.0)
    assert (sol.beta == 0).all()
    u = labo_distribution(z, y, 0.0)
    torch.testing.assert_close(u.double(), ref.uniform(z, y), atol=1e-9, rtol=1e-6)


def test_zero_budget_is_uniform_for_nearly_constant_logits():
    """Regression: δ = 0 must give β = 0 (u* = ū) even where the float32 estimate of KL(p̄‖ū)
    rounds to ≤ 0 (std 1e-4 logits, V = 1000); the first solver left β = 1 there."""
    z, y = make_case(8, 1000, 1e-4, seed=0)
    assert (ref.kl_to_uniform(z, y, torch.ones(8, dtype=torch.float64)) > 0).all()
    beta = solve_inverse_temperature(z, y, 0.0)
    assert (beta == 0).all(), f"β = {beta.tolist()}"


@pytest.mark.parametrize("delta", [0.0, 0.3, 1.0])
def test_logits_and_log_probabilities_agree(delta):
    z, y = make_case(16, 500, 4.0, seed=2)
    lp = torch.log_softmax(z, dim=-1)
    b_z = solve_inverse_temperature(z, y, delta)
    b_lp = solve_inverse_temperature(lp, y, delta)
    torch.testing.assert_close(b_lp, b_z, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(labo_distribution(lp, y, delta), labo_distribution(z, y, delta),
                               atol=1e-6, rtol=1e-3)
    # A large per-row offset changes nothing either.
    z_shift = z + torch.linspace(-50, 50, 16).unsqueeze(1)
    torch.testing.assert_close(solve_inverse_temperature(z_shift, y, delta), b_z,
                               atol=1e-4, rtol=1e-3)


def test_per_row_tensor_budget():
    z, y = make_case(10, 200, 3.0, seed=4)
    budget = torch.tensor([0.0, 1e-3, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, math.log(199)])
    sol, u = check_against_reference(z, y, budget)
    for i in range(10):
        b_i = solve_inverse_temperature(z[i : i + 1], y[i : i + 1], float(budget[i]))
        torch.testing.assert_close(sol.beta[i : i + 1], b_i, atol=1e-4, rtol=1e-3)
    # A one-element tensor broadcasts like a float.
    torch.testing.assert_close(
        solve_inverse_temperature(z, y, torch.tensor([0.5])), solve_inverse_temperature(z, y, 0.5)
    )
    torch.testing.assert_close(
        solve_inverse_temperature(z, y, torch.tensor(0.5)), solve_inverse_temperature(z, y, 0.5)
    )


def test_larger_budget_gives_larger_beta():
    z, y = make_case(8, 300, 2.0, seed=6)
    betas = [solve_inverse_temperature(z, y, d, tol=1e-6, max_iter=50) for d in
             (0.0, 0.01, 0.1, 0.3, 1.0, 10.0)]
    for lo, hi in zip(betas, betas[1:]):
        assert (hi >= lo - 1e-6).all()
    assert (betas[0] == 0).all() and (betas[-1] == 1).all()


@pytest.mark.parametrize("delta", [0.0, 0.5, 3.0])
def test_equal_non_target_logits_give_uniform(delta):
    vocab = 50
    z = torch.full((4, vocab), 2.5)
    y = torch.tensor([0, 7, 49, 20])
    z[torch.arange(4), y] = torch.tensor([10.0, -3.0, 2.5, 100.0])
    u = labo_distribution(z, y, delta)
    torch.testing.assert_close(u.double(), ref.uniform(z, y), atol=1e-7, rtol=0)
    beta = solve_inverse_temperature(z, y, delta)
    assert torch.isfinite(beta).all() and ((beta >= 0) & (beta <= 1)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_half_precision_inputs(dtype, delta):
    z, y = make_case(8, 1000, 5.0, seed=8)
    zh = z.to(dtype)
    beta = solve_inverse_temperature(zh, y, delta)
    u = labo_distribution(zh, y, delta)
    assert beta.dtype in (torch.float32, torch.float64)
    assert u.dtype in (torch.float32, torch.float64)
    # The float64 answer for the (rounded) half-precision input.
    check_against_reference(zh.double(), y, delta, scores=zh)
    # And within the input rounding of the float32 input's answer.
    tv = 0.5 * (u.double() - ref.distribution(z, y, delta)).abs().sum(1)
    assert tv.max() <= 1e-2


def test_v3_and_v2():
    z = torch.tensor([[1.0, 2.0, -1.0], [0.0, 0.0, 0.0], [5.0, -5.0, 30.0]])
    y = torch.tensor([0, 1, 2])
    for delta in (0.0, 0.01, 0.2, 1.0):
        check_against_reference(z, y, delta)
    # V = 2: the only non-target class takes all the mass, whatever δ.
    z2 = torch.tensor([[1.0, -3.0], [0.0, 4.0]])
    y2 = torch.tensor([0, 0])
    for delta in (0.0, 0.5):
        u = labo_distribution(z2, y2, delta)
        torch.testing.assert_close(u, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


@pytest.mark.parametrize("delta", [0.0, 1e-3, 0.5, 5.0])
def test_extreme_logits_never_nan(delta):
    z, y = make_case(8, 64, 1.0, seed=9)
    z = torch.where(z > 0, torch.full_like(z, 1e4), torch.full_like(z, -1e4))
    z[:, 0] = 3e4
    z[:, 1] = -3e4
    sol, u = check_against_reference(z, y, delta)
    assert not torch.isnan(sol.kl).any()


@pytest.mark.parametrize("delta", [0.0, 1e-3, 0.5, 2.0])
def test_masked_classes(delta):
    """Classes with logit −inf are outside the support: u* gives them zero mass and ū (the prior
    the budget is measured against) is uniform over the *unmasked* non-target classes — the
    reference implements exactly that convention (reference._support)."""
    z, y = make_case(8, 40, 3.0, seed=10)
    z[:, 5:15] = -math.inf
    y[0] = 5  # target itself masked (the solver must not care: u*[y] = 0 anyway)
    y[1] = 39
    z[2, :] = torch.where(torch.arange(40) % 2 == 0, z[2], torch.tensor(-math.inf))
    z[3, 20:] = 1e4  # extreme and masked together
    sol, u = check_against_reference(z, y, delta)
    assert (u[:, 5:15] == 0).all()
    assert (u[2, 1::2] == 0).all()
    # δ = 0: uniform over the unmasked non-targets.
    if delta == 0.0:
        torch.testing.assert_close(u.double(), ref.uniform(z, y), atol=1e-7, rtol=0)


def test_single_unmasked_non_target_and_fully_masked_row():
    z = torch.tensor([[0.0, 1.0, -math.inf, -math.inf], [2.0, -math.inf, -math.inf, -math.inf]])
    y = torch.tensor([0, 0])
    for delta in (0.0, 0.5):
        u = labo_distribution(z, y, delta)
        beta = solve_inverse_temperature(z, y, delta)
        assert not torch.isnan(u).any() and not torch.isnan(beta).any()
        torch.testing.assert_close(u[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))
        # No non-target class is left: u* is all zero (documented in labo_distribution).
        assert (u[1] == 0).all()


def test_ignore_index_rows_skipped():
    z, y = make_case(6, 30, 4.0, seed=12)
    y[[1, 4]] = 1  # padding index 1
    sol = solve(z, y, 0.2, ignore_index=1)
    assert (sol.beta[[1, 4]] == 1).all()
    assert not sol.bound[[1, 4]].any()
    keep = torch.tensor([0, 2, 3, 5])
    torch.testing.assert_close(sol.beta[keep], solve(z[keep], y[keep], 0.2).beta)


def test_max_iter_one_still_a_distribution():
    z, y = make_case(16, 300, 10.0, seed=13)
    sol = solve(z, y, 0.5, max_iter=1)
    assert sol.iterations <= 1
    u = labo_distribution(z, y, 0.5, max_iter=1)
    assert ((sol.beta >= 0) & (sol.beta <= 1)).all()
    torch.testing.assert_close(u.double().sum(1), torch.ones(16, dtype=torch.float64))
    assert (u[torch.arange(16), y] == 0).all()


def test_does_not_modify_input_or_track_grad():
    z, y = make_case(4, 50, 2.0, seed=14)
    z.requires_grad_(True)
    before = z.detach().clone()
    u = labo_distribution(z, y, 0.5)
    beta = solve_inverse_temperature(z, y, 0.5)
    assert not u.requires_grad and not beta.requires_grad
    assert torch.equal(z.detach(), before)
