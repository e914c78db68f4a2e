"""Synthetic logits shaped like a trained NMT model's output layer (for the benchmarks).

Each row is a Zipf-like distribution over a random permutation of the vocabulary:
``z_k = −s·log(rank_k) + 0.5·noise`` with exponent s ~ U[1, 1.4] per row, scaled by a per-row
factor ~ U[1.5, 3.5] (so some rows are peaked, others flatter), a Gaussian bulk with a heavy
right tail. The gold token is drawn from the row's own softmax, as for a model whose predictions
are calibrated (per-token perplexity of a few units to a few tens). Generated in float32 chunk
by chunk so that large N × V fit in memory.
"""
from __future__ import annotations

import torch


def realistic_logits(n_rows: int, vocab: int, seed: int = 0, chunk: int = 256):
    g = torch.Generator().manual_seed(seed)
    log_rank = torch.arange(1, vocab + 1, dtype=torch.float32).log()
    z = torch.empty(n_rows, vocab)
    y = torch.empty(n_rows, dtype=torch.long)
    for start in range(0, n_rows, chunk):
        r = min(chunk, n_rows - start)
        s = 1.0 + 0.4 * torch.rand(r, 1, generator=g)
        base = -s * log_rank + 0.5 * torch.randn(r, vocab, generator=g)
        perm = torch.argsort(torch.rand(r, vocab, generator=g), dim=1)
        rows = torch.empty(r, vocab).scatter_(1, perm, base)
        rows.mul_(1.5 + 2.0 * torch.rand(r, 1, generator=g))
        z[start : start + r] = rows
        y[start : start + r] = torch.multinomial(torch.softmax(rows, 1), 1, generator=g).squeeze(1)
    return z, y
