"""The protocol's steps on one question's mixed group: the old policy and every method's gradient at the
base parameters, the NTHR and GWHES diagnostics, and per method one update and its measured Delta."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from ..core import (NTHRScores, first_order_logp_change, group_advantages, gwhes, method_token_advantages,
                    nthr_threshold, nthr_token_scores, select_above, sequence_logprob, success_rate)
from ..scoring import ScoredGroup, logit_transform_of, output_embedding_weight, score_group
from ..scoring.logit_transform import check_head_follows
from .group_gradients import merge_scores, subset_forwards, weighting_gradients


def question_seed(seed: int, question_id: str, salt: str) -> int:
    digest = hashlib.sha256(f"{seed}|{question_id}|{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class BaseDiagnostics:
    """The group at the base parameters: the old policy and the paper's token and response scores."""
    old: object                    # ScoredGroup: token_logps, hidden, entropy
    logp_before: torch.Tensor      # [G]
    advantages: torch.Tensor       # [G]
    scores: object                 # NTHRScores
    selected: torch.Tensor         # [G, T] NTHR selection
    tau: float
    gwhes: torch.Tensor            # [G]


def base_forwards(model, copies, batch, correct, temperature: float):
    """(forwards, old): forwards with gradients at the base parameters of the correct and of the incorrect
    rows (the update's), and the old policy's float32 scores with hidden states and entropy. Without a
    bf16 copy the old scores are those forwards' detached values; with one, the float32 master is scored
    separately."""
    copies.compute.eval()              # deterministic forwards (no dropout), with gradients for the update
    subsets = [correct.nonzero().flatten(), (~correct).nonzero().flatten()]
    if copies.separate:
        old = score_group(model, batch, temperature=temperature, with_hidden=True, with_entropy=True)
        old = ScoredGroup(*(values.float().cpu() for values in (old.token_logps, old.hidden, old.entropy)))
        return subset_forwards(copies.compute, batch, subsets, temperature=temperature, with_scores=False), old
    forwards = subset_forwards(model, batch, subsets, temperature=temperature, with_scores=True)
    return forwards, merge_scores(forwards, batch)


def diagnose(model, old, batch, correct, config) -> BaseDiagnostics:
    """NTHR scores, selection and tau, GWHES and the group's advantages at the base parameters. The
    vocabulary passes run on the model's device; every result is on the CPU, like `old` and `batch`."""
    unembed, transform = output_embedding_weight(model).detach(), logit_transform_of(model)
    check_head_follows(old.hidden, unembed, batch.tokens, batch.mask, old.token_logps, temperature=config.temperature,
                       transform=transform)
    scores = nthr_token_scores(old.hidden, unembed, batch.tokens, batch.mask, correct,
                               temperature=config.temperature, vocab=config.nthr_vocab,
                               anchor_self=config.nthr_anchor_self, token_logprobs=old.token_logps,
                               logit_transform=transform)
    scores = NTHRScores(scores.scores.cpu(), scores.anchors.cpu())
    tau = nthr_threshold(scores.anchors, correct, config.nthr_beta)
    return BaseDiagnostics(
        old=old, logp_before=sequence_logprob(old.token_logps, batch.mask),
        advantages=group_advantages(correct.float(), config.group_size, std=config.std, eps=config.std_eps),
        scores=scores, selected=select_above(scores.scores, batch.mask, correct, tau), tau=tau,
        gwhes=gwhes(old.hidden, unembed, batch.tokens, batch.mask, correct, temperature=config.temperature,
                    token_logprobs=old.token_logps, logit_transform=transform).cpu())


def method_updates(model, copies, forwards, base: BaseDiagnostics, batch, correct, question_id, config) -> dict:
    """{method: (per-token advantages, scaled tokens, loss, gradients, first-order predicted change [G])}.
    The methods differ on the incorrect rows only, so they share backwards (group_gradients), and the
    first-order predictions share one pass over the vocabulary."""
    weightings = {method: method_token_advantages(
        method, base.advantages, batch.mask, correct, base.selected, config.eta_policy,
        seed=question_seed(config.seed, question_id, "random")) for method in config.methods}
    gradients = weighting_gradients(list(copies.compute.parameters()), forwards, base.old.token_logps,
                                    {v: per_token for v, (per_token, _) in weightings.items()}, batch.mask,
                                    clip_eps=config.clip_eps)
    old = base.old
    # PAPER (theory): first-order change of log pi(y|x) under one gradient step, per method
    predictions = first_order_logp_change(old.hidden, output_embedding_weight(model).detach(), batch.tokens,
                                          batch.mask,
                                          torch.stack([weightings[v][0] for v in config.methods]).to(old.hidden.dtype),
                                          lr=config.lr, temperature=config.temperature,
                                          token_logprobs=old.token_logps, logit_transform=logit_transform_of(model)).cpu()
    return {v: (*weightings[v], *gradients[v], predicted) for v, predicted in zip(config.methods, predictions)}


def _make_optimizer(name: str, parameters, lr: float):
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)


def apply_update(model, copies, base_state, gradients, config, warm=None) -> None:
    """Restore the base parameters exactly, then one optimizer step with the given gradients (None: none).
    warm (a WarmState): the step is AdamW's next one from the saved moments; every parameter steps (a missing
    gradient is zero there, as in a training step, so the moments alone still move it)."""
    model.load_state_dict(base_state)
    if warm is None:
        optimizer = _make_optimizer(config.optimizer, model.parameters(), config.lr)
    else:
        optimizer = warm.optimizer(config.lr)
        gradients = [None] * len(list(model.parameters())) if gradients is None else gradients
    for parameter, gradient in zip(model.parameters(), gradients or []):
        if gradient is None and warm is not None:
            gradient = torch.zeros_like(parameter)
        parameter.grad = None if gradient is None else gradient.to(parameter.dtype)
    optimizer.step()
    del optimizer
    model.zero_grad(set_to_none=True)
    copies.sync()


def pass_rate(task, completions, answer) -> float:
    if not completions:
        return math.nan
    return sum(task.reward(c.text, answer).reward for c in completions) / len(completions)


def method_row(question_id, method, base: BaseDiagnostics, correct, logp_after, predicted, scaled, loss,
                batch, config) -> dict:
    """One row of protocol.parquet (PROTOCOL_COLUMNS without the pass rates)."""
    lengths = batch.mask.sum(1)
    negatives = batch.mask & ~correct[:, None]
    delta = logp_after.double() - base.logp_before.double()   # float64: delta_sum equals the stored difference
    delta_mean = delta / lengths.clamp(min=1)
    return {
        "question_id": question_id, "method": method, "group_size": config.group_size,
        "n_correct": int(correct.sum()), "p": success_rate(correct),
        # PAPER: Delta(x) = mean over correct y+ of log pi_theta'(y+|x) - log pi_theta(y+|x)
        "delta_sum": float(delta[correct].mean()), "delta_mean": float(delta_mean[correct].mean()),
        "delta_incorrect_sum": float(delta[~correct].mean()),
        "predicted_delta": float(predicted[correct].mean()),
        "predicted_delta_incorrect": float(predicted[~correct].mean()),
        "gwhes": float(base.gwhes[correct].mean()), "tau": base.tau,
        "scaled_fraction": float(scaled[negatives].float().mean()) if negatives.any() else 0.0,
        "nthr_selected_fraction": float(base.selected[negatives].float().mean()) if negatives.any() else 0.0,
        "loss": float(loss),
    }


def response_rows(question_id, method, group, rewards, correct, base: BaseDiagnostics, logp_after, predicted,
                  scaled, batch) -> list[dict]:
    """The group's rows of responses.parquet for one method."""
    lengths = batch.mask.sum(1)
    scaled_fraction = (scaled.sum(1).float() / lengths.clamp(min=1)).masked_fill(correct, 0.0)
    return [{"question_id": question_id, "method": method, "response_index": index,
             "correct": bool(correct[index]), "reward": rewards[index].reward, "parsed": rewards[index].parsed,
             "advantage": float(base.advantages[index]), "completion": completion.text,
             "n_tokens": int(lengths[index]), "logp_before": float(base.logp_before[index]),
             "logp_after": float(logp_after[index]), "predicted_delta": float(predicted[index]),
             "gwhes": float(base.gwhes[index]), "nthr_anchor": float(base.scores.anchors[index]),
             "scaled_fraction": float(scaled_fraction[index])} for index, completion in enumerate(group)]


def token_rows(question_id, tokenizer, correct, base: BaseDiagnostics, batch) -> list[dict]:
    """The group's rows of tokens.parquet (old policy, NTHR score and selection)."""
    lengths = batch.mask.sum(1)
    return [{"question_id": question_id, "response_index": index, "position": position,
             "token_id": int(batch.tokens[index, position]), "token": tokenizer.decode([int(batch.tokens[index, position])]),
             "correct": bool(correct[index]), "logp_before": float(base.old.token_logps[index, position]),
             "entropy": float(base.old.entropy[index, position]),
             "nthr_score": float(base.scores.scores[index, position]),
             "nthr_selected": bool(base.selected[index, position])}
            for index in range(batch.size) for position in range(int(lengths[index]))]
