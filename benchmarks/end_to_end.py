"""End-to-end training throughput: fairseq-train words/second with LABO vs label smoothing.

Both runs use the pair's offline config (model, optimizer, batch size from
``configs/<pair>.yaml``, default multi30k-en-de) on its prepared binarized data, the same seed
and the same ``--max-update``; no checkpoints or validation (``--no-save
--disable-validation``), JSON logs every ``--log-interval`` updates. The runs alternate
LS, LABO, LS, LABO, ... (``--rounds`` of each) so that slow drifts of the shared machine's
load hit both.

Reported per method: the median over runs of the median ``wps`` of the ``train_inner`` log
intervals, leaving out each run's first interval (start-up, torch.compile of the LABO kernels,
which is cached under /tmp/torchinductor_* after the first run), and the epoch-summary ``wps``
(all updates, start-up included). Ratio = LABO / LS.

Example:
    python benchmarks/end_to_end.py --max-update 60 --rounds 2 \
        --out benchmarks/results/end-to-end-cpu.json --markdown docs/PERFORMANCE.md
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.doc_block import write_block  # noqa: E402

MARK_BEGIN = "<!-- end-to-end-benchmark:begin -->"
MARK_END = "<!-- end-to-end-benchmark:end -->"
DROP = {"--max-epoch", "--keep-last-epochs", "--log-format", "--log-interval"}


def train_args(cfg: dict) -> list:
    out, args = [], list(cfg["train_args"])
    i = 0
    while i < len(args):
        if args[i] in DROP:
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def run_once(args, cfg, method, workdir) -> dict:
    cmd = [
        sys.executable, "-m", "fairseq_cli.train", str(args.data),
        "--user-dir", str(REPO / "labo_fairseq"), "--cpu",
        *train_args(cfg), *cfg["methods"][method],
        "--max-update", str(args.max_update), "--no-save", "--disable-validation",
        "--save-dir", str(workdir), "--log-format", "json", "--log-interval", str(args.log_interval),
        "--no-progress-bar",
    ]
    if method == "labo":
        cmd += ["--labo-compile", args.compile, "--labo-tol", str(args.tol)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=7200)
    wall = time.time() - t0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{log[-4000:]}")
    inner, summary = [], None
    for line in log.splitlines():
        m = re.search(r"\| (train_inner|train) \| (\{.*\})\s*$", line)
        if not m:
            continue
        rec = json.loads(m.group(2))
        if m.group(1) == "train_inner":
            inner.append(rec)
        else:
            summary = rec
    wps = [float(r["wps"]) for r in inner]
    return {
        "method": method, "wall_s": wall, "interval_wps": wps,
        "median_wps_after_first": statistics.median(wps[1:]) if len(wps) > 1 else float("nan"),
        "summary_wps": float(summary.get("train_wps", summary.get("wps", "nan")))
        if summary else float("nan"),
        "summary": summary, "load_avg_1min_end": os.getloadavg()[0],
        "command": " ".join(cmd),
    }


def markdown(res, command):
    ls, labo = res["methods"]["ls"], res["methods"]["labo"]
    return "\n".join([
        MARK_BEGIN,
        f"Command: `{command}`  ",
        f"{res['date']}; data {res['data']}; {res['max_update']} updates per run, "
        f"{res['rounds']} runs per method (alternating), {res['threads']} thread(s); "
        f"load average at the end of the runs: {res['loads']}",
        "",
        "| method | median interval wps (first interval left out), per run | "
        "epoch-summary wps, per run | wall s, per run |",
        "|---|---|---|---|",
        f"| LS | {', '.join(f'{r:.0f}' for r in ls['median_wps_after_first'])} | "
        f"{', '.join(f'{r:.0f}' for r in ls['summary_wps'])} | "
        f"{', '.join(f'{r:.0f}' for r in ls['wall_s'])} |",
        f"| LABO | {', '.join(f'{r:.0f}' for r in labo['median_wps_after_first'])} | "
        f"{', '.join(f'{r:.0f}' for r in labo['summary_wps'])} | "
        f"{', '.join(f'{r:.0f}' for r in labo['wall_s'])} |",
        "",
        f"Throughput ratio LABO/LS (medians of the interval medians): "
        f"**{res['ratio_interval_wps']:.3f}**; from the epoch-summary wps: "
        f"{res['ratio_summary_wps']:.3f}.",
        MARK_END,
    ])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="multi30k-en-de")
    p.add_argument("--data", default=None, help="binarized data (default data/<pair>/bin)")
    p.add_argument("--max-update", type=int, default=60)
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--out", default=None)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)
    cfg = yaml.safe_load((REPO / "configs" / f"{args.pair}.yaml").read_text())
    args.data = Path(args.data or REPO / "data" / args.pair / "bin")
    if not (args.data / "dict.de.txt").exists() and not any(args.data.glob("dict.*.txt")):
        sys.exit(f"no binarized data at {args.data}: run the pair's prepare step first")
    command = "python " + " ".join([os.path.relpath(__file__, REPO)] + (argv or sys.argv[1:]))
    runs = {"ls": [], "labo": []}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for method in ("ls", "labo"):
                out = run_once(args, cfg, method, Path(tmp) / f"{method}{r}")
                runs[method].append(out)
                loads.append(round(out["load_avg_1min_end"], 1))
                print(f"{method} run {r}: median interval wps {out['median_wps_after_first']:.0f}, "
                      f"summary wps {out['summary_wps']:.0f}, wall {out['wall_s']:.0f}s, "
                      f"load {out['load_avg_1min_end']:.1f}", flush=True)
    methods = {
        m: {k: [r[k] for r in rs] for k in ("median_wps_after_first", "summary_wps", "wall_s")}
        for m, rs in runs.items()
    }
    med = {m: statistics.median(v["median_wps_after_first"]) for m, v in methods.items()}
    summ = {m: statistics.median(v["summary_wps"]) for m, v in methods.items()}
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command,
        "data": os.path.relpath(args.data, REPO), "max_update": args.max_update,
        "rounds": args.rounds, "threads": args.threads, "loads": loads,
        "methods": methods, "runs": runs,
        "ratio_interval_wps": med["labo"] / med["ls"],
        "ratio_summary_wps": summ["labo"] / summ["ls"],
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    block = markdown(res, command)
    if args.markdown:
        write_block(args.markdown, block, MARK_BEGIN, MARK_END)
    print(block)


if __name__ == "__main__":
    main()
