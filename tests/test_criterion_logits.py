"""The criterion's logits fast path against its log-prob path on a real fairseq transformer.

The criterion computes LABO from the decoder logits when the model's normalisation is plain
log-softmax; these tests check that the two paths give the same loss, logging outputs and
parameter gradients, and that models with another normalisation keep the log-prob path.
"""
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq.data import Dictionary  # noqa: E402
from fairseq.models.transformer import TransformerConfig, TransformerModelBase  # noqa: E402

from labo_fairseq.criterions import labo_label_smoothed_cross_entropy as crit_mod  # noqa: E402

VOCAB = "abcdefghijklmnopqrstuvwxyz"


def _model_and_task(seed: int = 0):
    torch.manual_seed(seed)
    dictionary = Dictionary()
    for word in VOCAB:
        dictionary.add_symbol(word)
    cfg = TransformerConfig()
    cfg.encoder.embed_dim = cfg.decoder.embed_dim = 16
    cfg.decoder.input_dim = cfg.decoder.output_dim = 16
    cfg.encoder.ffn_embed_dim = cfg.decoder.ffn_embed_dim = 32
    cfg.encoder.layers = cfg.decoder.layers = 1
    cfg.encoder.attention_heads = cfg.decoder.attention_heads = 2
    cfg.share_all_embeddings = True
    task = SimpleNamespace(source_dictionary=dictionary, target_dictionary=dictionary)
    return TransformerModelBase.build_model(cfg, task), task


def _sample(dictionary: Dictionary) -> dict:
    gen = torch.Generator().manual_seed(1)
    low, high = dictionary.nspecial, len(dictionary)
    src = torch.randint(low, high, (3, 7), generator=gen)
    tgt = torch.randint(low, high, (3, 6), generator=gen)
    tgt[0, 4:] = dictionary.pad()
    tgt[1, 5] = dictionary.eos()
    prev = torch.roll(tgt, 1, dims=1)
    prev[:, 0] = dictionary.eos()
    return {"id": torch.arange(3), "net_input": {"src_tokens": src, "src_lengths": torch.full((3,), 7),
                                                 "prev_output_tokens": prev},
            "target": tgt, "ntokens": int(tgt.ne(dictionary.pad()).sum())}


def _run(monkeypatch, use_logits: bool, **kw):
    model, task = _model_and_task()
    if not use_logits:
        monkeypatch.setattr(crit_mod, "normalizes_with_log_softmax", lambda model: False)
    criterion = crit_mod.LaboLabelSmoothedCrossEntropyCriterion(task, False, 0.1, **kw)
    loss, sample_size, logging = criterion(model, _sample(task.target_dictionary))
    loss.backward()
    monkeypatch.undo()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss, logging, grads


@pytest.mark.parametrize("compile", ["off", "on"])
@pytest.mark.parametrize("budget", [0.0, 0.5, 2.0])
def test_logits_path_matches_log_prob_path(monkeypatch, budget, compile):
    kw = dict(labo_budget=budget, labo_compile=compile, ignore_prefix_size=1)
    fast_loss, fast_log, fast_grads = _run(monkeypatch, True, **kw)
    ref_loss, ref_log, ref_grads = _run(monkeypatch, False, **kw)
    torch.testing.assert_close(fast_loss, ref_loss, rtol=1e-5, atol=1e-5)
    for key in ("nll_loss", "labo_bound", "labo_beta_sum", "labo_temp_sum", "labo_positions"):
        assert fast_log[key] == pytest.approx(float(ref_log[key]), rel=1e-4, abs=1e-5), key
    assert fast_grads.keys() == ref_grads.keys() and fast_grads
    for name, grad in fast_grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_only_plain_log_softmax_models_take_the_logits_path():
    model, _ = _model_and_task()
    assert crit_mod.normalizes_with_log_softmax(model)

    wrapper = torch.nn.Module()
    wrapper.module = model  # what DistributedDataParallel / fairseq's proxy wrapper expose
    assert crit_mod.normalizes_with_log_softmax(wrapper)

    model.decoder.adaptive_softmax = torch.nn.Identity()
    assert not crit_mod.normalizes_with_log_softmax(model)

    class Tempered(TransformerModelBase):
        def get_normalized_probs(self, net_output, log_probs, sample=None):
            return torch.log_softmax(net_output[0].float() / 2.0, -1)

    tempered, _ = _model_and_task()
    tempered.__class__ = Tempered
    assert not crit_mod.normalizes_with_log_softmax(tempered)
    assert not crit_mod.normalizes_with_log_softmax(SimpleNamespace())  # no decoder (test stubs)


def test_non_finite_logits_name_the_batch():
    model, task = _model_and_task()
    criterion = crit_mod.LaboLabelSmoothedCrossEntropyCriterion(task, False, 0.1, labo_budget=1.0)
    sample = _sample(task.target_dictionary)
    with torch.no_grad():
        model.decoder.output_projection.weight[5, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="batch 1.*sample ids"):
        criterion(model, sample)
