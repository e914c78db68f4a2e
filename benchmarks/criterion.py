"""LABO vs fairseq label smoothing: time, peak memory and solver accuracy of one training step
of the criterion, from logits to the gradient with respect to the logits.

For each shape N × V (N target positions, V vocabulary) each method runs what its fairseq
criterion runs on the decoder output ``x`` (a leaf holding the logits), through
``loss.backward()``:

- LS: ``lprobs = log_softmax(x)`` (the model's ``get_normalized_probs``), then fairseq's
  ``label_smoothed_nll_loss``;
- LABO: ``labo_fairseq.loss.labo_smoothed_loss_from_logits(x, ...)``, the criterion's path for
  models normalised by plain log-softmax (fairseq's transformers), with the given budget /
  tolerance / compile mode;
- LABO via log-probs (``--lprobs-path``): ``log_softmax`` then
  ``labo_label_smoothed_nll_loss``, the criterion's path for other models. The logits come from :mod:`benchmarks.logits` (Zipf-like rows with a heavy right tail,
gold token drawn from the row's softmax); 5% of the rows are padding (ignore_index 1).

Time: after one warm-up step per method (compilation happens there), ``--reps`` steps per method,
interleaved (the order alternates every repetition); the median of each and the median of the
per-repetition ratios LABO/LS are reported, with the load average beside them (the machine may be
shared).

Peak memory: each method runs in a fresh subprocess. On CPU the child makes its inputs, runs a
warm-up step, then resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``),
reads VmRSS as the baseline (inputs, compiled code, allocator state), runs one step and reads
VmHWM: the figure is VmHWM − baseline, i.e. what the step itself adds at its peak (the
gradient kept in ``x.grad`` included). On CUDA it is ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats`` minus the allocated bytes before the step.

Solver figures (from one extra solve outside the timing): mean number of exact passes per bound
row (the uniform-statistics pass not counted), the largest number, the fraction of bound rows and
the largest |KL(u*‖ū) − δ| over bound rows, recomputed in float64 from the returned β (not the
solver's own estimate).

Examples:
    python benchmarks/criterion.py --quick                      # smoke test, ~1 min
    python benchmarks/criterion.py --out benchmarks/results/criterion-cpu.json --markdown docs/PERFORMANCE.md
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.doc_block import write_block  # noqa: E402

PAD = 1
MARK_BEGIN = "<!-- criterion-benchmark:begin -->"
MARK_END = "<!-- criterion-benchmark:end -->"


def _quiet():
    logging.disable(logging.WARNING)
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")


def make_inputs(n, v, seed, device, dtype):
    from benchmarks.logits import realistic_logits

    z, y = realistic_logits(n, v, seed=seed)
    pad = torch.rand(n, generator=torch.Generator().manual_seed(seed + 1)) < 0.05
    y[pad] = PAD
    return z.to(device=device, dtype=dtype), y.to(device)


def step_fn(method, args):
    """One training step of the criterion on leaf ``x`` (returns nothing; x.grad is filled)."""
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    from labo_fairseq.loss import labo_label_smoothed_nll_loss, labo_smoothed_loss_from_logits

    def ls(x, y):
        lp = torch.log_softmax(x, -1)
        loss, _ = label_smoothed_nll_loss(lp, y, args.epsilon, ignore_index=PAD, reduce=True)
        loss.backward()

    def labo(x, y, compile_mode):
        loss, _, _ = labo_smoothed_loss_from_logits(
            x, y, args.epsilon, args.budget, ignore_index=PAD, reduce=True, tol=args.tol,
            compile=compile_mode,
        )
        loss.backward()

    def labo_lprobs(x, y):
        lp = torch.log_softmax(x, -1)
        loss, _ = labo_label_smoothed_nll_loss(
            lp, y, args.epsilon, args.budget, ignore_index=PAD, reduce=True, tol=args.tol,
            compile=args.compile,
        )
        loss.backward()

    if method == "ls":
        return ls
    if method == "labo":
        return lambda x, y: labo(x, y, args.compile)
    if method == "labo_eager":
        return lambda x, y: labo(x, y, "off")
    if method == "labo_lprobs":
        return labo_lprobs
    raise ValueError(method)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def child_memory(args):
    """Entry point of the memory subprocess: prints one JSON line."""
    _quiet()
    torch.set_num_threads(args.threads)
    n, v = args.child_shape
    x, y = make_inputs(n, v, args.seed, args.device, getattr(torch, args.dtype))
    x.requires_grad_(True)
    fn = step_fn(args.child_method, args)
    fn(x, y)  # warm-up: compilation, allocator
    x.grad = None
    import gc

    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(x, y)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        out = {"method": "cuda_max_memory_allocated", "peak_bytes": peak - base}
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _status_kb("VmRSS")
        fn(x, y)
        peak = _status_kb("VmHWM")
        out = {"method": "VmHWM-VmRSS", "peak_bytes": (peak - base) * 1024}
    out["input_bytes"] = x.numel() * x.element_size()
    print("MEMJSON " + json.dumps(out), flush=True)


def measure_memory(args, n, v, method):
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child-memory",
        "--child-shape", str(n), str(v), "--child-method", method,
        "--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype,
        "--budget", str(args.budget), "--epsilon", str(args.epsilon), "--tol", str(args.tol),
        "--compile", args.compile, "--seed", str(args.seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    for line in proc.stdout.splitlines():
        if line.startswith("MEMJSON "):
            return json.loads(line[len("MEMJSON "):])
    raise RuntimeError(f"memory child failed: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def true_kl_error(lprobs, y, sol, budget, chunk=64):
    """max |KL(u*‖ū) − δ| over bound rows, recomputed in float64 from the returned β."""
    worst = 0.0
    bound = sol.bound
    for s in range(0, lprobs.size(0), chunk):
        sl = slice(s, min(s + chunk, lprobs.size(0)))
        rows = bound[sl].nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        z = lprobs[sl][rows].double()
        t = y[sl][rows]
        z.scatter_(1, t.unsqueeze(1), -math.inf)
        finite = torch.isfinite(z)
        n = finite.sum(1).double()
        b = sol.beta[sl][rows].double().unsqueeze(1)
        d = z - z.amax(1, keepdim=True)
        logw = torch.where(finite, b * d, -math.inf)
        lse = torch.logsumexp(logw, 1, keepdim=True)
        u = torch.exp(logw - lse)
        kl = (u * torch.where(u > 0, logw - lse, 0.0)).sum(1) + n.log()
        worst = max(worst, float((kl - budget).abs().max()))
    return worst


def solver_figures(args, x, y):
    from labo_fairseq.solver import solve

    lp = torch.log_softmax(x.detach(), -1)
    t0 = time.perf_counter()
    sol = solve(lp, y, args.budget, tol=args.tol, ignore_index=PAD, compile=args.compile)
    _sync(args.device)
    solve_s = time.perf_counter() - t0
    bound = sol.bound
    it = sol.row_iterations[bound].float()
    return {
        "solve_s": solve_s,
        "compiled": bool(sol.compiled),
        "bound_fraction": float(bound.float().mean()),
        "mean_iterations": float(it.mean()) if it.numel() else 0.0,
        "max_iterations": int(it.max()) if it.numel() else 0,
        "max_abs_kl_error_solver": float((sol.kl - args.budget)[bound].abs().max())
        if bound.any() else 0.0,
        "max_abs_kl_error_fp64": true_kl_error(lp, y, sol, args.budget),
        "mean_beta_bound": float(sol.beta[bound].mean()) if bound.any() else 1.0,
    }


def time_shape(args, n, v):
    x, y = make_inputs(n, v, args.seed, args.device, getattr(torch, args.dtype))
    x.requires_grad_(True)
    methods = (["ls", "labo"] + (["labo_eager"] if args.eager else [])
               + (["labo_lprobs"] if args.lprobs_path else []))
    fns = {m: step_fn(m, args) for m in methods}
    for m in methods:  # warm-up (compilation)
        t0 = time.perf_counter()
        fns[m](x, y)
        _sync(args.device)
        x.grad = None
        print(f"  warm-up {m}: {time.perf_counter() - t0:.2f}s", flush=True)
    times = {m: [] for m in methods}
    loads = []
    for rep in range(args.reps):
        order = methods if rep % 2 == 0 else methods[::-1]
        for m in order:
            _sync(args.device)
            t0 = time.perf_counter()
            fns[m](x, y)
            _sync(args.device)
            times[m].append(time.perf_counter() - t0)
            x.grad = None
        loads.append(os.getloadavg()[0])
    res = {
        "N": n, "V": v, "dtype": args.dtype, "device": args.device,
        "times_s": times,
        "median_s": {m: statistics.median(t) for m, t in times.items()},
        "ratio_labo_ls": statistics.median(
            [a / b for a, b in zip(times["labo"], times["ls"])]
        ),
        "load_avg_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
    }
    for extra in methods[2:]:
        res[f"ratio_{extra}_ls"] = statistics.median(
            [a / b for a, b in zip(times[extra], times["ls"])]
        )
    res.update(solver_figures(args, x, y))
    del x, y
    if not args.skip_memory:
        mem = {m: measure_memory(args, n, v, m) for m in ("ls", "labo")}
        res["peak_bytes"] = {m: r["peak_bytes"] for m, r in mem.items()}
        res["memory_method"] = mem["ls"]["method"]
        res["input_bytes"] = mem["ls"]["input_bytes"]
        res["memory_ratio_labo_ls"] = mem["labo"]["peak_bytes"] / max(1, mem["ls"]["peak_bytes"])
    return res


def markdown(results, command):
    lines = [
        MARK_BEGIN,
        f"Command: `{command}`  ",
        f"Host: {results['host']}; torch {results['torch']}; threads {results['threads']}; "
        f"δ = {results['budget']}, α = {results['epsilon']}, tol = {results['tol']}, "
        f"compile = {results['compile']}; {results['reps']} interleaved repetitions; "
        f"{results['date']}",
        "",
        "| N | V | dtype | LS median s | LABO median s | LABO/LS time | LABO eager/LS | "
        "LABO via log-probs/LS | "
        "peak MB LS | peak MB LABO | LABO/LS peak | mean passes | max passes | bound | "
        "max abs(KL−δ) | load (min–max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["shapes"]:
        pk = r.get("peak_bytes", {})
        lines.append(
            f"| {r['N']} | {r['V']} | {r['dtype']} | {r['median_s']['ls']:.3f} | "
            f"{r['median_s']['labo']:.3f} | **{r['ratio_labo_ls']:.2f}** | "
            f"{r.get('ratio_labo_eager_ls', float('nan')):.2f} | "
            f"{r.get('ratio_labo_lprobs_ls', float('nan')):.2f} | "
            f"{pk.get('ls', float('nan')) / 2**20:.0f} | {pk.get('labo', float('nan')) / 2**20:.0f} | "
            f"**{r.get('memory_ratio_labo_ls', float('nan')):.2f}** | "
            f"{r['mean_iterations']:.2f} | {r['max_iterations']} | {r['bound_fraction']:.2f} | "
            f"{r['max_abs_kl_error_fp64']:.1e} | "
            f"{r['load_avg_1min']['min']:.1f}–{r['load_avg_1min']['max']:.1f} |"
        )
    lines.append(MARK_END)
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--N", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--V", type=int, nargs="+", default=[8000, 32000, 50000])
    p.add_argument("--quick", action="store_true", help="small shapes, 3 reps (smoke test)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", nargs="+", default=None,
                   help="default float32 on CPU, float16 bfloat16 on CUDA")
    p.add_argument("--budget", type=float, default=1.0)
    p.add_argument("--epsilon", type=float, default=0.1)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--eager", action="store_true", help="also time LABO with compile=off")
    p.add_argument("--lprobs-path", action="store_true",
                   help="also time LABO through log_softmax + labo_label_smoothed_nll_loss")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON output path")
    p.add_argument("--markdown", default=None, help="markdown file whose table block is replaced")
    # internal: memory child
    p.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-shape", type=int, nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--child-method", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.dtype is None:
        args.dtype = ["float32"] if args.device == "cpu" else ["float16", "bfloat16"]
    if args.child_memory:
        args.dtype = args.dtype[0]
        return child_memory(args)
    _quiet()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.N, args.V, args.reps = [256, 1024], [8000], min(args.reps, 3)
    command = "python " + " ".join([os.path.relpath(__file__, REPO)] + (argv or sys.argv[1:]))
    results = {
        "host": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__, "threads": args.threads, "budget": args.budget,
        "epsilon": args.epsilon, "tol": args.tol, "compile": args.compile, "reps": args.reps,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command,
        "shapes": [],
    }
    dtypes = args.dtype
    for dtype in dtypes:
        args.dtype = dtype
        for n in args.N:
            for v in args.V:
                print(f"N={n} V={v} {dtype} ...", flush=True)
                r = time_shape(args, n, v)
                results["shapes"].append(r)
                print(
                    f"  LS {r['median_s']['ls']:.3f}s LABO {r['median_s']['labo']:.3f}s "
                    f"ratio {r['ratio_labo_ls']:.2f} mem {r.get('memory_ratio_labo_ls', float('nan')):.2f} "
                    f"passes {r['mean_iterations']:.2f} kl_err {r['max_abs_kl_error_fp64']:.1e} "
                    f"load {r['load_avg_1min']['median']:.1f}", flush=True,
                )
                if args.out:
                    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.out).write_text(json.dumps(results, indent=1))
    args.dtype = dtypes
    if args.markdown:
        write_block(args.markdown, markdown(results, command), MARK_BEGIN, MARK_END)
    print(markdown(results, command))


if __name__ == "__main__":
    main()
