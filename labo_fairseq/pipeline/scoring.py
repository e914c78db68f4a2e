"""Corpus-level BLEU / chrF and the paired bootstrap test, all through sacreBLEU's own code.

Scores are reported with sacreBLEU's signatures so they can be compared across papers; the
optional "tokenized BLEU" (``tokenize='none'`` on already tokenized text) reproduces the
multi-bleu/fairseq-score convention that IWSLT'14 papers report.
"""
from __future__ import annotations

from typing import Any, Sequence

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest


def sacrebleu_scores(hyps: Sequence[str], refs: Sequence[str], tokenize: str) -> dict[str, Any]:
    """BLEU (with ``tokenize``) and chrF of detokenised hypotheses, with signatures."""
    _check_lengths(hyps, refs)
    bleu, chrf = BLEU(tokenize=tokenize), CHRF()
    bleu_score = bleu.corpus_score(list(hyps), [list(refs)])
    chrf_score = chrf.corpus_score(list(hyps), [list(refs)])
    return {
        "bleu": round(bleu_score.score, 2), "bleu_detail": str(bleu_score),
        "bleu_signature": str(bleu.get_signature()),
        "chrf": round(chrf_score.score, 2), "chrf_signature": str(chrf.get_signature()),
    }


def tokenized_bleu(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, Any]:
    """BLEU on tokenized text, no further tokenization (multi-bleu.perl / fairseq-score style)."""
    _check_lengths(hyps, refs)
    bleu = BLEU(tokenize="none", force=True)
    score = bleu.corpus_score(list(hyps), [list(refs)])
    return {"bleu": round(score.score, 2), "detail": str(score), "signature": str(bleu.get_signature())}


def paired_bootstrap(baseline: tuple[str, Sequence[str]], system: tuple[str, Sequence[str]],
                     refs: Sequence[str], tokenize: str, n_samples: int = 1000) -> dict[str, Any]:
    """sacreBLEU's paired bootstrap resampling test of ``system`` against ``baseline`` (BLEU, and
    chrF on the same resamples under ``"chrf"``).

    Returns both BLEU scores, the bootstrap mean ± 95% CI half-width of each, the p-value and the
    test's signature. sacreBLEU's p-value is for the null hypothesis that the systems do not
    differ: its statistic is |BLEU(system) − BLEU(baseline)| (centred over the resamples), so it
    says nothing about the direction, which is the sign of the observed difference; add-one
    smoothing. Seeded via SACREBLEU_SEED (default 12345).
    """
    _check_lengths(baseline[1], refs)
    _check_lengths(system[1], refs)
    test = PairedTest([(baseline[0], list(baseline[1])), (system[0], list(system[1]))],
                      {"BLEU": BLEU(tokenize=tokenize), "chrF": CHRF()}, [list(refs)],
                      test_type="bs", n_samples=n_samples)
    signatures, results = test()
    base, sys_ = results["BLEU"]
    (chrf_name,) = [k for k in results if k.startswith("chrF")]  # sacreBLEU names it chrF2
    chrf_base, chrf_sys = results[chrf_name]
    return {
        "baseline": baseline[0], "system": system[0], "n_samples": n_samples,
        "baseline_bleu": base.score, "baseline_mean": base.mean, "baseline_ci": base.ci,
        "system_bleu": sys_.score, "system_mean": sys_.mean, "system_ci": sys_.ci,
        "p_value": sys_.p_value, "signature": str(signatures["BLEU"]),
        "chrf": {"baseline": chrf_base.score, "system": chrf_sys.score,
                 "p_value": chrf_sys.p_value, "signature": str(signatures[chrf_name])},
    }


def _check_lengths(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")
