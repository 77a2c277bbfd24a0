"""Float64 brute-force references: explicit double sums over token pairs, full probability vectors."""

import math

import torch


def probs64(hidden, unembed, temperature):
    return torch.softmax(hidden.double() @ unembed.double().T / temperature, dim=-1)


def error_vector(hidden, unembed, token, temperature, columns=None):
    """g = e_y - pi over the full vocabulary, then restricted to `columns` (no renormalisation)."""
    pi = probs64(hidden[None], unembed, temperature)[0]
    g = -pi.clone()
    g[token] += 1.0
    if columns is not None:
        g = g[columns]
    return g


def interaction(hidden, unembed, tokens, query_mask, source_weight, temperature=1.0, columns=None):
    G, T, _ = hidden.shape
    out = torch.zeros(G, T, dtype=torch.float64)
    sources = [(g, t) for g in range(G) for t in range(T) if source_weight[g, t] != 0]
    for gq in range(G):
        for tq in range(T):
            if not query_mask[gq, tq]:
                continue
            gt = error_vector(hidden[gq, tq], unembed, int(tokens[gq, tq]), temperature, columns)
            total = 0.0
            for gs, ts in sources:
                gk = error_vector(hidden[gs, ts], unembed, int(tokens[gs, ts]), temperature, columns)
                alpha = float(gk @ gt)
                total += float(source_weight[gs, ts]) * alpha * float(hidden[gs, ts].double() @ hidden[gq, tq].double())
            out[gq, tq] = total
    return out


def nthr(hidden, unembed, tokens, mask, correct, temperature=1.0, vocab="full", anchor_self=True):
    columns = torch.unique(tokens[mask]) if vocab == "group" else None
    source = (mask & correct[:, None]).double()
    scores = interaction(hidden, unembed, tokens, mask, source, temperature, columns)
    anchors = torch.full((len(correct),), math.nan, dtype=torch.float64)
    for i in range(len(correct)):
        if not correct[i] or mask[i].sum() == 0:
            continue
        if anchor_self:
            anchors[i] = scores[i][mask[i]].mean()
        else:
            others = source.clone()
            others[i] = 0
            if others.sum() == 0:
                anchors[i] = 0.0
            else:
                s = interaction(hidden, unembed, tokens, mask, others, temperature, columns)
                anchors[i] = s[i][mask[i]].mean()
    return scores, anchors


def gwhes(hidden, unembed, tokens, mask, correct, temperature=1.0):
    p = correct.double().mean().item()
    p_plus = (1 - p) / math.sqrt(p * (1 - p))
    p_minus = p / math.sqrt(p * (1 - p))
    pos = interaction(hidden, unembed, tokens, mask, (mask & correct[:, None]).double(), temperature)
    neg = interaction(hidden, unembed, tokens, mask, (mask & ~correct[:, None]).double(), temperature)
    out = torch.full((len(correct),), math.nan, dtype=torch.float64)
    for i in range(len(correct)):
        if correct[i]:
            term_one = p_plus * pos[i][mask[i]].sum()
            term_two = p_minus * neg[i][mask[i]].sum()
            out[i] = term_two - term_one
    return out


def random_group(seed, G=5, T=6, d=4, V=11, dtype=torch.float64, shared_prefix=2):
    """A small random group with padding, ragged lengths and a shared prefix."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(G, T, d, generator=gen, dtype=dtype)
    unembed = torch.randn(V, d, generator=gen, dtype=dtype)
    tokens = torch.randint(0, V, (G, T), generator=gen)
    if shared_prefix:
        tokens[:, :shared_prefix] = tokens[0, :shared_prefix]
        hidden[:, :shared_prefix] = hidden[0, :shared_prefix]
    lengths = torch.randint(1, T + 1, (G,), generator=gen)
    lengths[0] = T
    mask = torch.arange(T)[None, :] < lengths[:, None]
    tokens = tokens.masked_fill(~mask, 0)
    correct = torch.zeros(G, dtype=torch.bool)
    correct[torch.randperm(G, generator=gen)[: max(1, G // 2)]] = True
    return hidden, unembed, tokens, mask, correct
