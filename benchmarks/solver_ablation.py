"""What each solver change buys: time of one ``solve`` and exact passes per bound row for
the solver as it was before the performance work (git f6f61d5: β = 1 pass, Newton from
sqrt(2δ/Var), eager chunked passes), the current algorithm on the eager passes
(``compile="off"``) and on the fused compiled passes (``compile="on"``). Interleaved
repetitions, medians; same synthetic logits as benchmarks/criterion.py.

    python benchmarks/solver_ablation.py --N 2048 --V 32000 --budget 0.5 1 2
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

OLD_COMMIT = "f6f61d5"


def old_solver():
    src = subprocess.run(["git", "show", f"{OLD_COMMIT}:labo_fairseq/solver.py"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_solver.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_solver", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_solver"] = mod  # dataclasses look the module up while decorating
    spec.loader.exec_module(mod)
    return mod


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--N", type=int, default=2048)
    p.add_argument("--V", type=int, default=32000)
    p.add_argument("--budget", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    from benchmarks.logits import realistic_logits
    from labo_fairseq.solver import solve

    old = old_solver()
    z, y = realistic_logits(args.N, args.V)
    lp = torch.log_softmax(z, 1)
    rows = []
    for delta in args.budget:
        variants = {
            "before (f6f61d5, eager)": lambda: old.solve(lp, y, delta),
            "now, eager": lambda: solve(lp, y, delta, compile="off"),
            "now, compiled": lambda: solve(lp, y, delta, compile="on"),
        }
        sols = {k: f() for k, f in variants.items()}  # warm-up / compile
        times = {k: [] for k in variants}
        for _ in range(args.reps):
            for k, f in variants.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        for k, sol in sols.items():
            if k.startswith("before"):
                # old solver: one β = 1 pass for all rows + `iterations` Newton passes
                passes = f"1 + {sol.iterations} (all rows)"
            else:
                it = sol.row_iterations[sol.bound].float()
                passes = f"{it.mean():.2f} (max {int(it.max())})"
            err = float((sol.kl - delta)[sol.bound].abs().max())
            rows.append({"delta": delta, "variant": k, "median_s": statistics.median(times[k]),
                         "passes": passes, "max_abs_kl_err_solver": err,
                         "load": os.getloadavg()[0]})
            print(f"| {delta} | {k} | {statistics.median(times[k]):.3f} | {passes} | "
                  f"{err:.1e} | {os.getloadavg()[0]:.1f} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"N": args.N, "V": args.V, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
