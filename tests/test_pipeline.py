"""Tests for the training/evaluation pipeline: command building, run records, refusals,
checkpoint averaging, scoring, reporting, and the whole chain on a Multi30k slice:
prepare.sh → train.sh (one epoch, tiny model) → evaluate.sh → reproduce.sh → report.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from labo_fairseq.pairs import load_pair_config
from labo_fairseq.pipeline import (averaging, evaluate, fairseq_log, layout, report, reproduce,
                                   scoring, sweep, train)
from labo_fairseq.pipeline.cli_args import flag_value

REPO = layout.REPO_ROOT
CORPORA = REPO.parent / "shared" / "corpora"
needs_mirror = pytest.mark.skipif(not (CORPORA / "multi30k").is_dir(), reason=f"no corpus mirror at {CORPORA}")
PAIR = "multi30k-en-de"
TINY = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
        "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "2", "--decoder-attention-heads", "2", "--max-epoch", "1",
        "--max-tokens", "2048", "--warmup-updates", "10", "--log-interval", "2"]
FAST_GENERATE = ["--beam", "1", "--max-len-b", "8"]


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(REPO / "scripts" / name), *args], capture_output=True, text=True, env=env)


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under root with (size, mtime_ns, content)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def _spec(tmp_path: Path, **kw) -> train.TrainSpec:
    return train.TrainSpec(PAIR, kw.pop("method", "ls"), data_root=tmp_path / "data",
                           save_root=tmp_path / "ck", **kw)


# --- command building --------------------------------------------------------------------

def test_command_has_one_value_per_pipeline_flag(tmp_path):
    cfg = load_pair_config(PAIR)
    run = tmp_path / "run"
    cmd = train.build_command(cfg, _spec(tmp_path, seed=7, extra_args=("--max-epoch", "2")), run)
    assert cmd[1:3] == ["-m", "fairseq_cli.train"]
    assert cmd[3] == str(tmp_path / "data" / PAIR / "bin")
    for flag, value in (("--seed", "7"), ("--save-dir", str(run)), ("--log-format", "json"),
                        ("--user-dir", str(layout.USER_DIR)), ("--num-workers", "0")):
        assert cmd.count(flag) == 1 and cmd[cmd.index(flag) + 1] == value, flag
    assert "--cpu" in cmd and "--distributed-world-size" not in cmd
    assert cmd[-2:] == ["--max-epoch", "2"], "extra args come last so they win"
    assert int(flag_value(cmd, "--keep-last-epochs")) >= cfg.evaluate.average_last
    assert cmd[cmd.index("--criterion") + 1] == "label_smoothed_cross_entropy"


def test_command_for_gpus_and_labo(tmp_path):
    cfg = load_pair_config(PAIR)
    cmd = train.build_command(cfg, _spec(tmp_path, method="labo", gpus=4), tmp_path / "run")
    assert "--cpu" not in cmd and cmd[cmd.index("--distributed-world-size") + 1] == "4"
    assert cmd[cmd.index("--criterion") + 1] == "labo_label_smoothed_cross_entropy"
    assert "--labo-budget" in cmd


def test_parse_args_splits_fairseq_passthrough():
    spec, dry_run = train.parse_args([PAIR, "labo", "--seed", "3", "--gpus", "0", "--", "--lr", "1e-4"])
    assert (spec.pair, spec.method, spec.seed, spec.gpus, spec.extra_args) == (PAIR, "labo", 3, 0, ("--lr", "1e-4"))
    assert not dry_run


def test_dry_run_prints_fairseq_args_and_touches_nothing(tmp_path, capsys):
    assert train.main([PAIR, "ls", "--gpus", "1", "--save-root", str(tmp_path), "--dry-run"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(str(layout.DEFAULT_DATA_ROOT / PAIR / "bin")) and "--cpu" not in printed
    assert "--save-dir " + str(tmp_path / PAIR / "ls" / "seed1") in printed
    assert not any(tmp_path.iterdir())


# --- refusals ----------------------------------------------------------------------------

def test_unknown_pair_is_refused_and_creates_nothing(tmp_path):
    result = _script("train.sh", "no-such-pair", "ls", "--save-root", str(tmp_path / "ck"),
                     "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert "unknown pair 'no-such-pair'" in result.stderr and PAIR in result.stderr
    assert not any(tmp_path.iterdir())
    assert reproduce.main(["no-such-pair", "--results-dir", str(tmp_path / "res")]) == 1
    assert not any(tmp_path.iterdir())


def _fake_finished_run(tmp_path: Path) -> Path:
    run = layout.run_dir(tmp_path / "ck", PAIR, "ls", 1)
    run.mkdir(parents=True)
    (run / layout.RUN_JSON).write_text(json.dumps({"command": ["python", "-m", "fairseq_cli.train"]}))
    (run / layout.DONE).write_text("2026-01-01\n")
    (run / "checkpoint1.pt").write_bytes(b"weights")
    return run


def test_finished_run_is_never_overwritten(tmp_path):
    run = _fake_finished_run(tmp_path)
    before = _snapshot(tmp_path)
    result = _script("train.sh", PAIR, "ls", "--seed", "1", "--save-root", str(tmp_path / "ck"),
                     "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert "finished run" in result.stderr and str(run) in result.stderr
    assert "--seed" in result.stderr and "--save-root" in result.stderr and "delete" in result.stderr
    assert _snapshot(tmp_path) == before


def test_unfinished_run_resumes_only_with_the_same_command(tmp_path):
    spec = _spec(tmp_path)
    run = layout.run_dir(spec.save_root, PAIR, "ls", 1)
    command = train.build_command(load_pair_config(PAIR), spec, run)
    run.mkdir(parents=True)
    (run / layout.RUN_JSON).write_text(json.dumps({"command": command, "started": "t0", "ended": None,
                                                   "status": "interrupted", "git": {}}))
    assert train.check_can_start(run, command)["status"] == "interrupted"
    other = train.build_command(load_pair_config(PAIR), _spec(tmp_path, extra_args=("--lr", "1")), run)
    with pytest.raises(train.RunError, match="different command"):
        train.check_can_start(run, other)


def test_evaluate_refuses_unfinished_run(tmp_path):
    with pytest.raises(evaluate.EvaluationError, match="no finished training run"):
        evaluate.evaluate(tmp_path)


def test_sweep_candidates_and_bad_budgets(tmp_path, capsys):
    plan = sweep.parse_args([PAIR, "--budgets", "2,0.5,2", "--save-root", str(tmp_path)])
    assert plan.budgets == (0.5, 2.0)
    labels = [(c.label, c.method, c.save_root(tmp_path)) for c in plan.candidates()]
    assert labels == [("ls", "ls", tmp_path), ("labo-d0.5", "labo", tmp_path / "sweep" / "d0.5"),
                      ("labo-d2", "labo", tmp_path / "sweep" / "d2")]
    assert sweep.Candidate(0.5).train_args(["--max-epoch", "1"]) == ("--labo-budget", "0.5", "--max-epoch", "1")
    for bad in ("-1", "x", "inf", ""):
        with pytest.raises(SystemExit):
            sweep.parse_args([PAIR, "--budgets", bad])
        assert "--budgets" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_suites_and_pair_filters():
    assert len(reproduce.SUITES["offline"]) == len(reproduce.SUITES["paper"]) == 7
    name, everything, chosen = reproduce.resolve_pairs("offline", ["tatoeba-de-en", PAIR])
    assert (name, chosen) == ("offline", (PAIR, "tatoeba-de-en")) and everything == reproduce.SUITES["offline"]
    pairs = (PAIR, "multi30k-de-en")
    assert reproduce.resolve_pairs(f"{PAIR},multi30k-de-en", None) == (f"{PAIR}_multi30k-de-en", pairs, pairs)
    with pytest.raises(ValueError, match="unknown pair"):
        reproduce.resolve_pairs("offline", ["nope"])
    with pytest.raises(ValueError, match="not in suite"):
        reproduce.resolve_pairs("offline", ["wmt14-en-de"])


# --- pieces of evaluation ----------------------------------------------------------------

def test_fairseq_log_lines_become_records():
    line = ('2026-12-04 18:00:44 | INFO | valid | {"epoch": 1, "valid_loss": "9.557", '
            '"valid_ppl": "742.4", "valid_num_updates": "8"}')
    assert fairseq_log.parse_line(line) == {"tag": "valid", "epoch": 1, "valid_loss": 9.557,
                                            "valid_ppl": 742.4, "valid_num_updates": 8}
    assert fairseq_log.parse_line("2026-12-04 | INFO | fairseq.trainer | begin training epoch 2") is None


def test_average_last_epoch_checkpoints(tmp_path):
    for epoch, value in ((2, 1.0), (9, 2.0), (10, 4.0)):
        torch.save({"model": {"w": torch.full((2,), value), "steps": torch.tensor([epoch])},
                    "epoch": epoch}, tmp_path / f"checkpoint{epoch}.pt")
    torch.save({"model": {}}, tmp_path / "checkpoint_last.pt")
    assert [p.name for p in averaging.last_epoch_checkpoints(tmp_path, 2)] == ["checkpoint9.pt", "checkpoint10.pt"]
    path, used = averaging.write_average(tmp_path, 2)
    state = torch.load(path, weights_only=True)
    assert path.name == "checkpoint.avg2.pt" and len(used) == 2
    torch.testing.assert_close(state["model"]["w"], torch.full((2,), 3.0))
    assert state["model"]["steps"].item() == 9 and state["epoch"] == 10
    path, used = averaging.write_average(tmp_path, 5)
    assert path.name == "checkpoint.avg3.pt" and len(used) == 3
    assert averaging.write_average(tmp_path, 1)[0].name == "checkpoint10.pt"


def test_hypotheses_back_in_corpus_order():
    out = "S-1\tb\nH-1\t-0.5\t▁world\nD-1\t-0.5\tworld\nH-0\t-0.1\t▁hello ▁there\n"
    assert evaluate.hypotheses_in_order(out) == ["▁hello ▁there", "▁world"]
    with pytest.raises(evaluate.EvaluationError):
        evaluate.hypotheses_in_order("H-1\t-0.5\tx\n")


def _fake_result(save_root: Path, method: str, seed: int, hyps: list[str], refs: Path) -> None:
    run = layout.run_dir(save_root, PAIR, method, seed)
    run.mkdir(parents=True)
    (run / layout.hyp_file()).write_text("\n".join(hyps) + "\n")
    scores = scoring.sacrebleu_scores(hyps, refs.read_text().splitlines(), "13a")
    (run / layout.RESULT_JSON).write_text(json.dumps({
        "seed": seed, "hypotheses": str(run / layout.hyp_file()), "references": str(refs),
        "tokenized_bleu": None, **scores}))


def test_report_means_difference_and_bootstrap(tmp_path):
    refs = ["a man rides a red bike down the street", "two dogs play in the snow",
            "a woman is reading a book", "children are running on the beach"] * 5
    ref_path = tmp_path / "ref.txt"
    ref_path.write_text("\n".join(refs) + "\n")
    worse = ["a man rides a bike", "two dogs play", "a woman reads", "children run on the beach"] * 5
    _fake_result(tmp_path, "ls", 1, worse, ref_path)
    _fake_result(tmp_path, "ls", 2, refs[:3] + worse[3:], ref_path)
    _fake_result(tmp_path, "labo", 1, refs, ref_path)
    row = report.summarize_pair(tmp_path, PAIR, ["ls", "labo"], [1, 2], n_bootstrap=100)
    ls, labo = row["methods"]["ls"]["bleu"], row["methods"]["labo"]["bleu"]
    assert ls["n"] == 2 and ls["std"] is not None and labo == {"mean": 100.0, "std": None, "n": 1}
    assert row["difference"] == pytest.approx(100.0 - ls["mean"], abs=0.011)
    assert row["bootstrap"]["seed"] == 1 and row["bootstrap"]["p_value"] < 0.05
    assert row["bootstrap"]["chrf"]["p_value"] < 0.05 and row["bootstrap"]["chrf"]["system"] == 100.0
    md, js = report.write_report("t", [row], ["ls", "labo"], [1, 2], tmp_path / "res", [])
    assert f"| {PAIR} | sacreBLEU |" in md.read_text()
    assert json.loads(js.read_text())["pairs"][0]["difference"] == row["difference"]


# --- the whole chain (runs in CI: ~2 min) --------------------------------------------------------------

def _source_lines(generate_output: Path) -> list[str]:
    """The ``S-<id>`` lines of fairseq-generate output in id order."""
    found = dict(line[2:].split("\t", 1) for line in generate_output.read_text().splitlines()
                 if line.startswith("S-"))
    return [found[str(i)] for i in range(len(found))]


@needs_mirror
def test_prepare_train_evaluate_reproduce(tmp_path):
    data, ck, res = tmp_path / "data", tmp_path / "ck", tmp_path / "results"
    slice_args = ["--max-train-lines", "300", "--vocab-size", "300"]
    prep = _script("prepare.sh", PAIR, "--mirror", str(CORPORA), "--data-dir", str(data), *slice_args)
    assert prep.returncode == 0, prep.stderr[-3000:]

    trained = _script("train.sh", PAIR, "ls", "--save-root", str(ck), "--data-dir", str(data), "--", *TINY)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "[train] epoch 1" in trained.stderr, "progress summary reaches the terminal"
    run = layout.run_dir(ck, PAIR, "ls", 1)
    record = json.loads((run / layout.RUN_JSON).read_text())
    assert record["status"] == "done" and record["method"] == "ls" and record["git"]["commit"]
    assert (run / layout.DONE).is_file() and (run / "checkpoint1.pt").is_file()
    tags = {r["tag"] for r in fairseq_log.read_records(run / layout.TRAIN_LOG)}
    assert {"train_inner", "train", "valid"} <= tags

    evaluated = _script("evaluate.sh", str(run), "--", *FAST_GENERATE)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads((run / layout.RESULT_JSON).read_text())
    refs = (data / PAIR / "raw" / "test.de").read_text().splitlines()
    hyps = (run / layout.hyp_file()).read_text().splitlines()
    assert result["n_sentences"] == len(hyps) == len(refs) == 1000
    assert "tok:13a" in result["bleu_signature"] and result["checkpoint"].endswith("checkpoint1.pt")
    assert "BLEU signature" in evaluated.stdout
    sources = evaluate.detokenize(_source_lines(run / evaluate.generate_output()), data / PAIR / "spm" / "spm.model")
    raw_sources = (data / PAIR / "raw" / "test.en").read_text().splitlines()
    same = sum(a == b for a, b in zip(sources, raw_sources))
    assert same >= 0.95 * len(raw_sources), "generate ids map back to corpus order"

    on_valid = _script("evaluate.sh", str(run), "--split", "valid", "--", *FAST_GENERATE)
    assert on_valid.returncode == 0, on_valid.stderr[-3000:]
    valid_result = json.loads((run / layout.result_json("valid")).read_text())
    assert valid_result["split"] == "valid" and valid_result["references"].endswith("raw/valid.de")
    assert valid_result["n_sentences"] == len((data / PAIR / "raw" / "valid.de").read_text().splitlines())
    assert json.loads((run / layout.RESULT_JSON).read_text()) == result, "test result untouched"

    before = _snapshot(run)
    again = _script("train.sh", PAIR, "ls", "--save-root", str(ck), "--data-dir", str(data), "--", *TINY)
    assert again.returncode == 1 and "finished run" in again.stderr
    assert _snapshot(run) == before

    reproduced = _script("reproduce.sh", PAIR, "--methods", "ls,labo", "--seeds", "1",
                         "--data-dir", str(data), "--save-root", str(ck), "--results-dir", str(res),
                         "--mirror", str(CORPORA), *slice_args, "--bootstrap-samples", "100",
                         "--generate-args", " ".join(FAST_GENERATE), "--", *TINY)
    assert reproduced.returncode == 0, reproduced.stderr[-3000:]
    assert f"{PAIR}/ls/seed1: archived (already evaluated)" in reproduced.stderr
    assert f"{PAIR}/labo/seed1: trained, evaluated and archived" in reproduced.stderr
    assert _snapshot(run) == before
    summary = json.loads((res / f"{PAIR}.json").read_text())
    row = summary["pairs"][0]
    assert row["methods"]["labo"]["bleu"]["n"] == 1 and row["bootstrap"]["n_samples"] == 100
    kept = layout.run_dir(res / PAIR / "runs", PAIR, "ls", 1)
    kept_result = json.loads((kept / layout.RESULT_JSON).read_text())
    assert kept_result["hypotheses"] == layout.hyp_file() and (kept / layout.hyp_file()).is_file()
    assert kept_result["references"] == str(data / PAIR / "raw" / "test.de"), "outside the repo: kept absolute"
    assert (kept / layout.TRAIN_LOG).is_file() and (kept / layout.RUN_JSON).is_file()

    # Without the checkpoints (a fresh clone), the archived results alone rebuild the same table.
    again = _script("reproduce.sh", PAIR, "--methods", "labo", "--data-dir", str(data),
                    "--save-root", str(tmp_path / "elsewhere"), "--results-dir", str(res),
                    "--bootstrap-samples", "100")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{PAIR}/labo/seed1: skipped (result archived" in again.stderr
    assert not (tmp_path / "elsewhere").exists()
    rebuilt = json.loads((res / f"{PAIR}.json").read_text())["pairs"][0]
    assert rebuilt["methods"] == row["methods"] and rebuilt["bootstrap"]["p_value"] == row["bootstrap"]["p_value"]
    labo_log = layout.run_dir(ck, PAIR, "labo", 1) / layout.TRAIN_LOG
    assert any("labo_temp" in r for r in fairseq_log.read_records(labo_log, "train_inner"))
    assert (res / PAIR / f"{PAIR}_valid_loss.png").is_file() and (res / PAIR / "bleu.png").is_file()
    assert "LABO − LS" in (res / f"{PAIR}.md").read_text()

    swept = _script("sweep.sh", PAIR, "--budgets", "0.5", "--data-dir", str(data), "--save-root", str(ck),
                    "--results-dir", str(res), "--generate-args", " ".join(FAST_GENERATE), "--", *TINY)
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert f"{PAIR}/ls/seed1: archived (already validated)" in swept.stderr, "the LS run is reused"
    assert f"{PAIR}/labo-d0.5/seed1: trained, validated and archived" in swept.stderr
    candidate = json.loads((layout.run_dir(ck / "sweep" / "d0.5", PAIR, "labo", 1) / layout.RUN_JSON).read_text())
    assert flag_value(candidate["command"], "--labo-budget") == "0.5", "the last value wins in fairseq"
    sweep_summary = json.loads((res / f"sweep-{PAIR}.json").read_text())
    assert sweep_summary["chosen_budget"] == 0.5 and sweep_summary["complete"]
    assert [r["label"] for r in sweep_summary["rows"]] == ["ls", "labo-d0.5"]
    assert all(r["valid_bleu"] >= 0 and r["cost"]["epochs"] == 1 for r in sweep_summary["rows"])
    assert "Chosen budget: δ = 0.5" in (res / f"sweep-{PAIR}.md").read_text()

    labo_run = layout.run_dir(ck, PAIR, "labo", 1)
    (labo_run / layout.DONE).unlink()
    checkpoint_mtime = (labo_run / "checkpoint1.pt").stat().st_mtime_ns
    resumed = _script("train.sh", PAIR, "labo", "--save-root", str(ck), "--data-dir", str(data), "--", *TINY)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((labo_run / layout.RUN_JSON).read_text())
    assert record["resumed"] and record["status"] == "done" and len(record["previous_attempts"]) == 1
    assert (labo_run / layout.DONE).is_file()
    assert (labo_run / "checkpoint1.pt").stat().st_mtime_ns == checkpoint_mtime, "nothing retrained"
