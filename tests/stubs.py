"""Minimal stand-ins for a fairseq task, model and sample, so criterion tests run without
building a fairseq model: exactly what the label-smoothed criteria call on them."""
from typing import Optional

import torch

PAD = 1


class StubDictionary:
    def pad(self) -> int:
        return PAD


class StubTask:
    target_dictionary = StubDictionary()


class StubModel:
    """Exposes what fairseq's label-smoothed criterion uses: __call__, get_normalized_probs,
    get_targets."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def __call__(self, **net_input):
        return (self.logits, {})

    def get_normalized_probs(self, net_output, log_probs):
        x = net_output[0].float()
        return torch.log_softmax(x, -1) if log_probs else torch.softmax(x, -1)

    def get_targets(self, sample, net_output):
        return sample["target"]


def stub_sample(target: torch.Tensor, ids: Optional[torch.Tensor] = None) -> dict:
    """A batch whose targets are ``target`` [B, T]; sample ids default to 0..B-1."""
    ids = torch.arange(target.size(0)) if ids is None else ids
    return {"id": ids, "net_input": {"src_tokens": target}, "target": target,
            "ntokens": int((target != PAD).sum())}
