"""fairseq glue for LABO: the registered criterion ``labo_label_smoothed_cross_entropy``.

A thin subclass of fairseq's label-smoothed cross-entropy: same flags, same logging, and the
loss swapped for LABO's. All math lives in :mod:`labo_fairseq.loss` and
:mod:`labo_fairseq.solver`, which need no fairseq state.

When the model normalises its output with fairseq's default (plain log-softmax of the decoder
logits: no adaptive softmax, no override of ``get_normalized_probs``), the loss is computed
from the logits directly (:func:`labo_fairseq.loss.labo_smoothed_loss_from_logits`), which
never writes the N × V log-probabilities and fuses log-softmax's backward into LABO's; any
other model goes through ``get_normalized_probs`` like fairseq's own criterion.

Logged besides loss / nll_loss / ppl (all summable across workers):
``labo_temp`` mean temperature T = 1/β over non-padding target positions (T = 1 where the
budget does not bind; positions with β = 0, i.e. T = ∞, are counted in ``labo_uniform``
instead), ``labo_bound`` fraction of positions where the budget binds, ``labo_beta`` mean β.
"""

# No `from __future__ import annotations`: fairseq reads dataclass field types at runtime.
import math
from dataclasses import dataclass, field

import torch
from fairseq import utils
from fairseq.criterions import register_criterion
from fairseq.dataclass import ChoiceEnum
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.logging import metrics
from fairseq.models import BaseFairseqModel, FairseqDecoder
from fairseq.models.transformer.transformer_base import TransformerModelBase

from labo_fairseq.loss import (
    DEFAULT_BUDGET,
    check_epsilon,
    labo_label_smoothed_nll_loss_with_stats,
    labo_smoothed_loss_from_logits,
)

# Model-level get_normalized_probs implementations known to only delegate to the decoder's.
_DELEGATING_NORMALIZERS = (
    BaseFairseqModel.get_normalized_probs,
    TransformerModelBase.get_normalized_probs,
)


@dataclass
class LaboLabelSmoothedCrossEntropyCriterionConfig(LabelSmoothedCrossEntropyCriterionConfig):
    labo_budget: float = field(
        default=DEFAULT_BUDGET,
        metadata={
            "help": "LABO smoothing budget δ in nats: how far (KL) the instance-level smoothing "
            "distribution may move from the uniform LS prior; 0 = plain label smoothing. "
            "Default 2.0: best validation BLEU of {0.25, 0.5, 1, 2, 4} on Multi30k en-de "
            "(results/sweep-multi30k-en-de.md); tune it on your validation set (scripts/sweep.sh)"
        },
    )
    labo_tol: float = field(
        default=1e-4,
        metadata={"help": "LABO solver tolerance on |KL(u*||uniform) - δ| in nats (> 0)"},
    )
    labo_max_iter: int = field(
        default=20, metadata={"help": "LABO solver cap on Newton/bisection iterations (>= 1)"}
    )
    labo_compile: ChoiceEnum(["auto", "on", "off"]) = field(
        default="auto",
        metadata={
            "help": "fused torch.compile kernels for the LABO solver and gradient: auto = for "
            "batches of >= 4M logits on CPU/CUDA, falling back to eager if compilation fails; "
            "on = always (error if unavailable); off = eager reference code only"
        },
    )


def _check_config(label_smoothing: float, budget: float, tol: float, max_iter: int) -> None:
    """Rejects settings the method is undefined for, naming the flag and its valid range."""
    check_epsilon(label_smoothing)
    if not (budget >= 0 and math.isfinite(budget)):
        raise ValueError(f"--labo-budget (δ, nats) must be a finite number >= 0, got {budget}")
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"--labo-tol must be a finite number > 0, got {tol}")
    if max_iter < 1:
        raise ValueError(f"--labo-max-iter must be an integer >= 1, got {max_iter}")


def normalizes_with_log_softmax(model) -> bool:
    """True when ``model.get_normalized_probs(net_output, log_probs=True)`` is exactly
    ``log_softmax(net_output[0].float())``, so the loss may start from the logits."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):  # DDP / proxy wrappers
        model = model.module
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, FairseqDecoder) or getattr(decoder, "onnx_trace", False):
        return False
    return (
        type(model).get_normalized_probs in _DELEGATING_NORMALIZERS
        and type(model).get_normalized_probs_scriptable
        is BaseFairseqModel.get_normalized_probs_scriptable
        and type(decoder).get_normalized_probs is FairseqDecoder.get_normalized_probs
        and type(decoder).get_normalized_probs_scriptable
        is FairseqDecoder.get_normalized_probs_scriptable
        and getattr(decoder, "adaptive_softmax", None) is None
    )


@register_criterion(
    "labo_label_smoothed_cross_entropy", dataclass=LaboLabelSmoothedCrossEntropyCriterionConfig
)
class LaboLabelSmoothedCrossEntropyCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(
        self,
        task,
        sentence_avg,
        label_smoothing,
        ignore_prefix_size=0,
        report_accuracy=False,
        labo_budget=DEFAULT_BUDGET,
        labo_tol=1e-4,
        labo_max_iter=20,
        labo_compile="auto",
    ):
        _check_config(label_smoothing, labo_budget, labo_tol, labo_max_iter)
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        self.labo_budget = labo_budget
        self.labo_tol = labo_tol
        self.labo_max_iter = labo_max_iter
        self.labo_compile = str(labo_compile)
        self._batches_seen = 0

    def forward(self, model, sample, reduce=True):
        """Like fairseq's label smoothing, plus the LABO diagnostics in the logging output."""
        self._batches_seen += 1
        net_output = model(**sample["net_input"])
        loss, nll_loss, stats, target, scores = self._labo_loss(model, net_output, sample, reduce)
        if not bool(torch.isfinite(loss).all()):
            self._raise_non_finite(scores, sample)
        sample_size = sample["target"].size(0) if self.sentence_avg else sample["ntokens"]
        valid = target.ne(self.padding_idx)
        finite_temp = valid & (stats.beta > 0)
        logging_output = {
            "loss": loss.data,
            "nll_loss": nll_loss.data,
            "ntokens": sample["ntokens"],
            "nsentences": sample["target"].size(0),
            "sample_size": sample_size,
            "labo_positions": utils.item(valid.sum()),
            "labo_bound": utils.item((stats.bound & valid).sum()),
            "labo_beta_sum": utils.item(torch.where(valid, stats.beta, 0).sum()),
            "labo_temp_sum": utils.item(
                torch.where(finite_temp, stats.beta.clamp_min(1e-30).reciprocal(), 0).sum()
            ),
            "labo_temp_count": utils.item(finite_temp.sum()),
        }
        if self.report_accuracy:
            n_correct, total = self.compute_accuracy(model, net_output, sample)
            logging_output["n_correct"] = utils.item(n_correct.data)
            logging_output["total"] = utils.item(total.data)
        return loss, sample_size, logging_output

    def compute_loss(self, model, net_output, sample, reduce=True):
        """Used by fairseq code that calls ``compute_loss`` directly (e.g. some tasks)."""
        loss, nll_loss, _, _, _ = self._labo_loss(model, net_output, sample, reduce)
        return loss, nll_loss

    def _labo_loss(self, model, net_output, sample, reduce):
        """(loss, nll_loss, per-position stats, flat target, the scores the loss read) with this
        criterion's settings, from the logits where the model allows it (module docstring)."""
        settings = dict(
            ignore_index=self.padding_idx, reduce=reduce, tol=self.labo_tol,
            max_iter=self.labo_max_iter, compile=self.labo_compile,
        )
        if normalizes_with_log_softmax(model):
            scores, target = self._logits_and_target(model, net_output, sample)
            loss_fn = labo_smoothed_loss_from_logits
        else:
            scores, target = self.get_lprobs_and_target(model, net_output, sample)
            loss_fn = labo_label_smoothed_nll_loss_with_stats
        loss, nll_loss, stats = loss_fn(scores, target, self.eps, self.labo_budget, **settings)
        return loss, nll_loss, stats, target, scores

    def _logits_and_target(self, model, net_output, sample):
        """Like ``get_lprobs_and_target`` but the decoder's raw logits, flattened to [N, V]."""
        logits = net_output[0]
        target = model.get_targets(sample, net_output)
        if self.ignore_prefix_size > 0:
            logits = logits[:, self.ignore_prefix_size :, :]
            target = target[:, self.ignore_prefix_size :]
        return logits.reshape(-1, logits.size(-1)), target.reshape(-1)

    def _raise_non_finite(self, scores, sample) -> None:
        """A non-finite loss means NaN/+inf log-probs (diverged training) or a gold token the
        model masked with -inf; stop with a message naming the batch. Checked on the loss, so
        healthy batches pay no extra pass over the logits."""
        bad_rows = (torch.isnan(scores) | torch.isposinf(scores)).any(-1).nonzero().flatten()
        ids = sample.get("id", torch.tensor([])).tolist()[:8]
        raise FloatingPointError(
            f"LABO criterion: non-finite logits/loss in training batch {self._batches_seen} "
            f"(sample ids {ids}, {bad_rows.numel()} positions with NaN/inf log-probs): the "
            "model diverged or a gold token was masked with -inf; lower --lr, check the data, "
            "or resume from an earlier checkpoint"
        )

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        """Aggregate logging outputs from data-parallel workers (every field is a sum)."""
        super().reduce_metrics(logging_outputs)

        def total(key: str) -> float:
            return utils.item(sum(log.get(key, 0) for log in logging_outputs))

        positions = total("labo_positions")
        if positions > 0:
            metrics.log_scalar("labo_bound", total("labo_bound") / positions, positions, round=3)
            metrics.log_scalar("labo_beta", total("labo_beta_sum") / positions, positions, round=3)
        temp_count = total("labo_temp_count")
        if temp_count > 0:
            metrics.log_scalar(
                "labo_temp", total("labo_temp_sum") / temp_count, temp_count, round=3
            )

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
