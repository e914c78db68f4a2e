"""The fused torch.compile path (labo_fairseq.fused, ``compile="on"``) against the eager
reference path (``compile="off"``) and the float64 reference solver.

Compiling the three kernels takes ~20–60 s the first time on a loaded CPU (cached afterwards
under /tmp/torchinductor_*); the tests skip if this platform cannot compile.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference as ref  # noqa: E402

from labo_fairseq import fused  # noqa: E402
from labo_fairseq.loss import labo_label_smoothed_nll_loss_with_stats  # noqa: E402
from labo_fairseq.solver import labo_distribution, solve  # noqa: E402

PAD = 1


def _case(n, v, seed, masked=False):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.1, 1.0, 3.0, 8.0]).repeat(n // 4 + 1)[:n].unsqueeze(1)
    z = torch.randn(n, v, generator=g) * scale
    y = torch.randint(0, v, (n,), generator=g)
    y[y == PAD] = PAD + 1
    y[-3:] = PAD  # padding rows
    if masked:
        z[:, 5:40] = -math.inf  # a masked block (e.g. special symbols)
        z[0, :] = -math.inf
        z[0, 7] = 0.0  # one row with a single unmasked class
    return z, y


@pytest.fixture(scope="module", autouse=True)
def compiled_available():
    z, y = _case(8, 64, 0)
    try:
        solve(z, y, 0.5, compile="on")
    except Exception as exc:  # pragma: no cover - platform without a working compiler
        pytest.skip(f"torch.compile unavailable here: {exc}")


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("delta", [0.0, 1e-3, 0.5, 2.0, 50.0])
def test_compiled_solver_matches_eager_and_reference(delta, masked):
    z, y = _case(40, 3000, seed=3, masked=masked)
    fast = solve(z, y, delta, ignore_index=PAD, compile="on")
    slow = solve(z, y, delta, ignore_index=PAD, compile="off")
    assert fast.compiled and not slow.compiled
    assert torch.equal(fast.bound, slow.bound)
    assert torch.isfinite(fast.beta).all() and ((fast.beta >= 0) & (fast.beta <= 1)).all()
    if delta >= 0.5:
        # (at tiny δ the KL tolerance allows a relatively wide range of β: compared via KL below)
        torch.testing.assert_close(fast.beta, slow.beta, atol=2e-4, rtol=2e-3)
    keep = (y != PAD) & fast.bound
    if delta > 0 and keep.any():
        # KL(u*‖ū) reached, recomputed in float64 at the returned β: within tol (+ fp32 slack).
        zz = z[keep]
        for sol in (fast, slow):
            kl = ref.kl_to_uniform(zz, y[keep], sol.beta[keep].double())
            assert (kl - delta).abs().max() <= 1e-4 + 2e-5
    free = (y != PAD) & ~fast.bound & (fast.beta > 0)
    assert (fast.beta[free] == 1).all()
    if delta == 0:
        several = (y != PAD) & (torch.isfinite(z).sum(1) > 2)  # ≥ 2 unmasked non-targets
        assert (fast.beta[several] == 0).all()


def test_compiled_distribution_matches_eager():
    z, y = _case(24, 2000, seed=5, masked=True)
    u_fast = labo_distribution(z, y, 0.7, compile="on")
    u_slow = labo_distribution(z, y, 0.7, compile="off")
    torch.testing.assert_close(u_fast, u_slow, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("delta", [0.0, 0.8])
def test_compiled_loss_and_gradient_match_eager(delta, dtype):
    z, y = _case(48, 1500, seed=7, masked=True)
    z[0, 7] = 0.0
    outs = {}
    for mode in ("on", "off"):
        x = z.clone().to(dtype).requires_grad_(True)
        lp = torch.log_softmax(x, -1)
        loss, nll, stats = labo_label_smoothed_nll_loss_with_stats(
            lp, y, 0.1, delta, ignore_index=PAD, compile=mode
        )
        loss.backward()
        outs[mode] = (loss.detach().float(), x.grad.float(), stats.beta)
    rtol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(outs["on"][0], outs["off"][0], rtol=rtol, atol=1e-4)
    torch.testing.assert_close(outs["on"][1], outs["off"][1], rtol=rtol, atol=1e-5 if dtype ==
                               torch.float32 else 2e-3)
    # padded rows get no gradient
    assert (outs["on"][1][y == PAD] == 0).all()


def test_non_finite_logits_propagate():
    z, y = _case(16, 1000, seed=9)
    z[2, 10] = float("nan")
    z[3, 11] = float("inf")
    x = z.clone().requires_grad_(True)
    loss, _, _ = labo_label_smoothed_nll_loss_with_stats(
        torch.log_softmax(x, -1), y, 0.1, 0.5, ignore_index=PAD, compile="on"
    )
    assert not torch.isfinite(loss)


def test_auto_mode_threshold_and_bad_mode():
    small = torch.zeros(4, 10)
    assert not fused.use_compiled("auto", small)
    assert not fused.use_compiled("off", small)
    assert fused.use_compiled("on", small)
    assert not fused.use_compiled("on", small.double()), "the kernels compute in float32"
    with pytest.raises(ValueError, match="--labo-compile"):
        fused.use_compiled("sometimes", small)
