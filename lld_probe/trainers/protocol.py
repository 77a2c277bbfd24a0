"""The paper's per-question LLD protocol (PAPER Sec. 3 and 5.3).

For each question: sample G responses from the base model, keep mixed groups, and for each variant
restore the base parameters exactly, apply ONE update on the group's GRPO loss, and measure on the
same responses the change of log-likelihood (Delta), next to the first-order prediction, NTHR
selection, GWHES, and a fresh-sample pass rate before vs after the update.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from ..core import (first_order_logp_change, group_advantages, gwhes, nthr_select, nthr_threshold,
                    nthr_token_scores, sequence_logprob, success_rate)
from ..models import load_model, sample_groups
from ..models.survey import max_new_tokens_for
from ..probe import build_group_batch, output_embedding_weight, score_group
from ..tasks import format_prompt, get_task
from .group_gradients import merge_scores, subset_forwards, weighting_gradients
from .precision import ComputeCopy
from .variants import check_variants, variant_token_advantages

OPTIMIZERS = ("sgd", "adamw")
DEFAULT_LR = {"sgd": 1e-3, "adamw": 1e-6}   # sgd 0.05 collapsed the tiny model's pass rate (0.58 -> 0.33)


@dataclass
class ProtocolConfig:
    model: str = "tiny"
    task: str = "arithmetic"
    questions: int = 32                        # questions drawn from the task (the most sampled with `mixed`)
    mixed: int | None = None                   # stop once this many mixed groups are kept (None: all questions)
    seed: int = 0
    group_size: int = 8
    temperature: float = 1.0
    max_new_tokens: int | None = None          # None: the model's default (tiny 24, smollm2 48)
    variants: list = field(default_factory=lambda: ["grpo", "pos_only", "random", "nthr"])
    optimizer: str = "sgd"
    lr: float | None = None                    # None: DEFAULT_LR[optimizer]
    beta: float = 1.0
    eta: object = "zero"
    clip_eps: float = 0.2
    std: str = "sample"
    std_eps: float = 1e-4
    vocab: str = "full"
    anchor_self: bool = True
    fresh_samples: int | None = None           # None: group_size; 0 disables the fresh-sample check
    bf16: bool = False                         # bf16 copy samples and computes the update's gradient;
                                               # parameters, optimizer and log-likelihoods stay float32
    sampling_chunk: int = 8                    # questions whose groups are sampled in one generate call (a
                                               # decoding step costs about the same for 8 rows as for 64)

    def resolved(self) -> "ProtocolConfig":
        check_variants(self.variants)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be at least 2, got {self.group_size}")
        if self.questions < 1:
            raise ValueError(f"questions must be at least 1, got {self.questions}")
        if self.mixed is not None and not 1 <= self.mixed <= self.questions:
            raise ValueError(f"mixed must be between 1 and questions ({self.questions}), got {self.mixed}")
        if self.sampling_chunk < 1:
            raise ValueError(f"sampling_chunk must be at least 1, got {self.sampling_chunk}")
        values = asdict(self)
        values["lr"] = self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]
        values["max_new_tokens"] = max_new_tokens_for(self.model, self.max_new_tokens)
        values["fresh_samples"] = self.group_size if self.fresh_samples is None else self.fresh_samples
        return ProtocolConfig(**values)


@dataclass
class ProtocolResult:
    protocol: pd.DataFrame        # one row per (question, variant)
    responses: pd.DataFrame       # one row per (question, variant, response)
    tokens: pd.DataFrame          # one row per response token of each kept group
    questions: pd.DataFrame       # one row per sampled question (kept or dropped)
    config: ProtocolConfig


def _question_seed(seed: int, question_id: str, salt: str) -> int:
    digest = hashlib.sha256(f"{seed}|{question_id}|{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _make_optimizer(name: str, parameters, lr: float):
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr)
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)


def _base_forwards(model, copies: ComputeCopy, batch, correct, temperature: float):
    """(forwards, old): forwards with gradients at the base parameters of the correct and of the incorrect
    rows (the update's), and the old policy's float32 scores with hidden states and entropy. Without a
    bf16 copy the old scores are those forwards' detached values; with one, the float32 master is scored
    separately."""
    copies.compute.eval()              # deterministic forwards (no dropout), with gradients for the update
    subsets = [correct.nonzero().flatten(), (~correct).nonzero().flatten()]
    if copies.separate:
        old = score_group(model, batch, temperature=temperature, with_hidden=True, with_entropy=True)
        return subset_forwards(copies.compute, batch, subsets, temperature=temperature, with_scores=False), old
    forwards = subset_forwards(model, batch, subsets, temperature=temperature, with_scores=True)
    return forwards, merge_scores(forwards, batch)


def _pass_rate(task, completions, answer) -> float:
    if not completions:
        return math.nan
    return sum(task.reward(c.text, answer).reward for c in completions) / len(completions)


def _sample(model, tokenizer, prompts, count, config, seed):
    """count samples for each prompt, at the protocol's temperature and length."""
    if count == 0:
        return [[] for _ in prompts]
    return sample_groups(model, tokenizer, prompts, group_size=count, temperature=config.temperature,
                         max_new_tokens=config.max_new_tokens, seed=seed, batch_prompts=len(prompts))


def run_protocol(config: ProtocolConfig, *, model=None, tokenizer=None, progress: bool = True) -> ProtocolResult:
    """Run the protocol; pass model/tokenizer to reuse a loaded model (its parameters are restored)."""
    config = config.resolved()
    torch.manual_seed(config.seed)
    if model is None:
        model, tokenizer = load_model(config.model)
    task = get_task(config.task)
    questions = task.questions(config.questions, seed=config.seed)
    if not questions:
        raise ValueError(f"task {config.task!r} gave no questions")
    base_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
    copies = ComputeCopy(model, bf16=config.bf16)
    protocol_rows, response_rows, token_rows, question_rows = [], [], [], []
    from tqdm.auto import tqdm
    bar = tqdm(questions, desc="protocol", unit="question", disable=not progress)
    sampled_groups = {}
    for index, question in enumerate(bar):
        if config.mixed is not None and sum(row["kept"] for row in question_rows) >= config.mixed:
            break
        prompt = format_prompt(tokenizer, question.prompt)
        if index % config.sampling_chunk == 0:     # the base model samples the groups of the next chunk at once
            chunk = questions[index: index + config.sampling_chunk]
            groups = _sample(copies.compute, tokenizer, [format_prompt(tokenizer, q.prompt) for q in chunk],
                             config.group_size, config, _question_seed(config.seed, chunk[0].question_id, "group"))
            sampled_groups = {index + offset: g for offset, g in enumerate(groups)}
        group = sampled_groups.pop(index)
        rewards = [task.reward(c.text, question.answer) for c in group]
        correct = torch.tensor([r.reward == 1.0 for r in rewards])
        n_correct = int(correct.sum())
        mixed = 0 < n_correct < config.group_size
        question_rows.append({"question_id": question.question_id, "n_correct": n_correct,
                              "group_size": config.group_size, "kept": mixed})
        if not mixed:
            continue
        batch = build_group_batch([c.prompt_ids for c in group], [c.completion_ids for c in group],
                                  tokenizer.pad_token_id)
        # forwards at the base parameters, correct and incorrect rows apart: the old-policy scores and
        # every variant's gradient (the variants differ on the incorrect rows only)
        forwards, old = _base_forwards(model, copies, batch, correct, config.temperature)
        unembed = output_embedding_weight(model).detach()
        scores = nthr_token_scores(old.hidden, unembed, batch.tokens, batch.mask, correct,
                                   temperature=config.temperature, vocab=config.vocab,
                                   anchor_self=config.anchor_self, token_logprobs=old.token_logps)
        selected = nthr_select(scores.scores, batch.mask, correct, scores.anchors, beta=config.beta)
        tau = nthr_threshold(scores.anchors, correct, config.beta)
        gwhes_per_response = gwhes(old.hidden, unembed, batch.tokens, batch.mask, correct,
                                   temperature=config.temperature, token_logprobs=old.token_logps)
        question_gwhes = float(gwhes_per_response[correct].mean())
        advantages = group_advantages(correct.float(), config.group_size, std=config.std, eps=config.std_eps)
        logp_before = sequence_logprob(old.token_logps, batch.mask)
        lengths = batch.mask.sum(1)
        fresh_seed = _question_seed(config.seed, question.question_id, "fresh")
        # fresh samples before and after share one seed (common random numbers: a paired pass-rate change)
        pass_before = _pass_rate(task, _sample(copies.compute, tokenizer, [prompt], config.fresh_samples, config,
                                               fresh_seed)[0], question.answer)
        negatives = batch.mask & ~correct[:, None]
        nthr_fraction = float(selected[negatives].float().mean()) if negatives.any() else 0.0
        weightings = {variant: variant_token_advantages(
            variant, advantages, batch.mask, correct, selected, config.eta,
            seed=_question_seed(config.seed, question.question_id, "random")) for variant in config.variants}
        gradients = weighting_gradients(list(copies.compute.parameters()), forwards, old.token_logps,
                                        {v: per_token for v, (per_token, _) in weightings.items()}, batch.mask,
                                        clip_eps=config.clip_eps)
        updates = {v: (*weightings[v], *gradients[v]) for v in config.variants}
        del forwards, gradients
        # first-order predictions of all variants, sharing one pass over the vocabulary
        predictions = first_order_logp_change(old.hidden, unembed, batch.tokens, batch.mask,
                                              torch.stack([updates[v][0] for v in config.variants]).to(old.hidden.dtype),
                                              lr=config.lr, temperature=config.temperature,
                                              token_logprobs=old.token_logps)
        for variant, predicted in zip(config.variants, predictions):
            per_token, scaled, loss, gradients = updates.pop(variant)
            model.load_state_dict(base_state)
            optimizer = _make_optimizer(config.optimizer, model.parameters(), config.lr)
            for parameter, gradient in zip(model.parameters(), gradients or []):   # None: no update
                parameter.grad = None if gradient is None else gradient.to(parameter.dtype)
            optimizer.step()
            del optimizer, gradients
            model.zero_grad(set_to_none=True)
            copies.sync()
            after = score_group(model, batch, temperature=config.temperature)
            logp_after = sequence_logprob(after.token_logps, batch.mask)
            delta = logp_after.double() - logp_before.double()   # float64: delta_sum equals the stored difference
            delta_mean = delta / lengths.clamp(min=1)
            pass_after = _pass_rate(task, _sample(copies.compute, tokenizer, [prompt], config.fresh_samples, config,
                                                  fresh_seed)[0], question.answer)
            selected_fraction = (scaled.sum(1).float() / lengths.clamp(min=1)).masked_fill(correct, 0.0)
            protocol_rows.append({
                "question_id": question.question_id, "variant": variant, "group_size": config.group_size,
                "n_correct": n_correct, "p": success_rate(correct),
                # PAPER: Delta(x) = mean over correct y+ of log pi_theta'(y+|x) - log pi_theta(y+|x)
                "delta_sum": float(delta[correct].mean()), "delta_mean": float(delta_mean[correct].mean()),
                "delta_incorrect_sum": float(delta[~correct].mean()),
                "predicted_delta": float(predicted[correct].mean()),
                "predicted_delta_incorrect": float(predicted[~correct].mean()),
                "gwhes": question_gwhes, "tau": tau,
                "selected_fraction": float(scaled[negatives].float().mean()) if negatives.any() else 0.0,
                "nthr_selected_fraction": nthr_fraction,
                "pass_rate_before": pass_before, "pass_rate_after": pass_after, "loss": float(loss),
            })
            for index, completion in enumerate(group):
                response_rows.append({
                    "question_id": question.question_id, "variant": variant, "response_index": index,
                    "correct": bool(correct[index]), "reward": rewards[index].reward, "parsed": rewards[index].parsed,
                    "advantage": float(advantages[index]), "completion": completion.text,
                    "n_tokens": int(lengths[index]), "logp_before": float(logp_before[index]),
                    "logp_after": float(logp_after[index]), "predicted_delta": float(predicted[index]),
                    "gwhes": float(gwhes_per_response[index]), "nthr_anchor": float(scores.anchors[index]),
                    "selected_fraction": float(selected_fraction[index]),
                })
        model.load_state_dict(base_state)
        copies.sync()
        for index in range(config.group_size):
            for position in range(int(lengths[index])):
                token_id = int(batch.tokens[index, position])
                token_rows.append({
                    "question_id": question.question_id, "response_index": index, "position": position,
                    "token_id": token_id, "token": tokenizer.decode([token_id]), "correct": bool(correct[index]),
                    "logp_before": float(old.token_logps[index, position]),
                    "entropy": float(old.entropy[index, position]),
                    "nthr_score": float(scores.scores[index, position]),
                    "selected": bool(selected[index, position]),
                })
        if progress:
            bar.set_postfix(kept=sum(r["kept"] for r in question_rows), refresh=False)
    model.load_state_dict(base_state)
    model.zero_grad(set_to_none=True)
    return ProtocolResult(pd.DataFrame(protocol_rows, columns=PROTOCOL_COLUMNS), pd.DataFrame(response_rows),
                          pd.DataFrame(token_rows), pd.DataFrame(question_rows), config)


PROTOCOL_COLUMNS = ["question_id", "variant", "group_size", "n_correct", "p", "delta_sum", "delta_mean",
                    "delta_incorrect_sum", "predicted_delta", "predicted_delta_incorrect", "gwhes", "tau",
                    "selected_fraction", "nthr_selected_fraction", "pass_rate_before", "pass_rate_after", "loss"]


def save_protocol(result: ProtocolResult, out_dir) -> dict:
    """Write protocol.parquet, responses.parquet, tokens.parquet, questions.parquet and meta.json."""
    from pathlib import Path

    from ..store import provenance, write_json, write_parquet
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("protocol", "responses", "tokens", "questions"):
        paths[name] = write_parquet(getattr(result, name), out / f"{name}.parquet")
    kept = int(result.questions["kept"].sum()) if len(result.questions) else 0
    meta = {"kind": "protocol", "settings": asdict(result.config), **provenance(),
            "questions_sampled": len(result.questions), "questions_kept": kept,
            "questions_dropped": len(result.questions) - kept}
    paths["meta"] = write_json(meta, out / "meta.json")
    return paths
