"""Likelihood probes for TRL's GRPOTrainer, as a mixin: `class MyTrainer(LikelihoodProbeMixin, GRPOTrainer)`.

For every generation batch the mixin takes the old policy's log-probs, entropy and final hidden states
from TRL's own loss forward when that forward runs at the old policy (one optimizer step per generation
batch, no autocast, no dropout: the default here), or else from a separate no-grad forward; computes
NTHR scores per group, lets a subclass replace the advantages (lld_probe.trainers.LLDGRPOTrainer does NTHR, Pos Only, Random),
re-scores the kept responses after the optimizer step (logp_after), scores a fixed probe set every
k steps, and writes all of it to the run store of DESIGN.md. Scalars (LLD rate, mean Delta of correct
and incorrect responses, selected fraction, tau, eval accuracy) go through TRL's metrics, so they
reach TensorBoard or W&B through report_to.

TRL methods this relies on (pinned by tests/test_trl_pins.py): _calculate_rewards,
_generate_and_score_completions, _compute_loss (which calls _get_per_token_logps_and_entropies on the
policy before it reads inputs["advantages"]), log, and the generation batch layout (G consecutive rows
per prompt).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from transformers import TrainerCallback

from ..core import nthr_select, nthr_token_scores, sequence_logprob
from ..core.nthr import nthr_threshold
from ..probe import build_group_batch, capture_backbone_hidden, output_embedding_weight, score_group
from ..probe.packing import DEFAULT_MAX_TOKENS
from ..store.provenance import provenance
from ..store.atomic import write_json
from ..store.run_store import RunStoreWriter


@dataclass
class ProbeSettings:
    """What the probes record. Defaults keep the overhead small (see README: probe overhead)."""
    response_fraction: float = 1.0      # share of responses re-scored after the step (logp_after)
    token_rows: bool = True             # per-token rows for the kept responses
    nthr_vocab: str = "group"           # "group": the paper's V* restriction; "full": exact, slower
    nthr_anchor_self: bool = True
    nthr_beta: float = 1.0
    probe_set_size: int = 16            # fixed (prompt, response) pairs drawn at the first step, 0: none
    probe_every: int = 5                # re-score the probe set every k optimizer steps
    eval_every: int = 0                 # greedy accuracy on eval_questions every k steps, 0: never
    eval_max_new_tokens: int | None = None
    correct_threshold: float | None = None   # None: rewards must be binary {0, 1}
    store_dir: str | None = None        # None: the trainer's output_dir
    reuse_training_forward: bool = True  # old-policy log-probs, entropy and hidden states from TRL's own loss
                                        # forward when it runs at the old policy (see old_policy_source);
                                        # False: always a separate no-grad forward
    score_max_tokens: int = DEFAULT_MAX_TOKENS   # packed tokens per re-scoring forward (raise it on a GPU)
    extra_meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 0.0 < self.response_fraction <= 1.0:
            raise ValueError(f"response_fraction must be in (0, 1], got {self.response_fraction}")
        if self.nthr_vocab not in ("full", "group"):
            raise ValueError(f"nthr_vocab must be 'full' or 'group', got {self.nthr_vocab!r}")
        if self.probe_every < 1:
            raise ValueError(f"probe_every must be >= 1, got {self.probe_every}")
        if self.score_max_tokens < 1:
            raise ValueError(f"score_max_tokens must be >= 1, got {self.score_max_tokens}")


@dataclass
class _Pending:
    """One generation batch between its sampling and the optimizer step that used it. The old-policy
    fields (logp_before .. taus) are filled by _lld_fill_old_policy, before the loss uses the batch."""
    step: int
    batch: object
    rewards: torch.Tensor
    correct: torch.Tensor
    advantages: torch.Tensor         # [B] sequence advantages as TRL computed them
    prompts: list
    completions: list
    question_ids: list
    kept: torch.Tensor               # [B] bool: re-scored after the step
    group_size: int
    logp_before: torch.Tensor | None = None        # [B] sequence sums, old policy
    token_logps_before: torch.Tensor | None = None  # [B, T]
    entropy: torch.Tensor | None = None            # [B, T]
    scores: torch.Tensor | None = None             # [B, T] NTHR scores
    selected: torch.Tensor | None = None           # [B, T] NTHR selection (incorrect responses only)
    scaled: torch.Tensor | None = None             # [B, T] tokens whose advantage the method scaled
    taus: list | None = None


def correctness(rewards: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """Binary rewards -> correct; with a threshold, reward >= threshold. Anything else is an error."""
    if torch.isnan(rewards).any():
        raise ValueError("a reward is NaN (every reward function returned None for a completion): "
                         "correctness is undefined")
    if threshold is None:
        if not bool(((rewards == 0) | (rewards == 1)).all()):
            values = sorted(set(rewards.tolist()))[:6]
            raise ValueError(f"rewards must be binary (0 or 1) to tell correct from incorrect responses, got "
                             f"values {values}; set correct_threshold to turn them into correct/incorrect")
        return rewards == 1
    return rewards >= threshold


def _has_dropout(model) -> bool:
    """Whether a training-mode forward of the model is stochastic (a dropout probability above 0)."""
    config = getattr(model, "config", None)
    rates = [value for key, value in (vars(config).items() if config is not None else ())
             if "dropout" in key and isinstance(value, (int, float)) and not isinstance(value, bool)]
    modules = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    return any(rate > 0 for rate in rates + modules)


def trl_rows_to_batch(prompt_ids, prompt_mask, completion_ids, completion_mask, pad_id: int):
    """TRL's layout (left-padded prompts, right-padded completions) -> a GroupBatch. TRL's completion
    mask is a prefix (ones up to and including EOS); anything else is refused."""
    completion_mask = completion_mask.bool()
    lengths = completion_mask.sum(1)
    prefix = torch.arange(completion_mask.shape[1], device=completion_mask.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, completion_mask):
        raise ValueError("completion_mask is not a prefix mask (masked tokens inside a completion, e.g. tool "
                         "outputs): the probes do not support it")
    prompts = [row[mask.bool()].tolist() for row, mask in zip(prompt_ids, prompt_mask)]
    completions = [row[: int(n)].tolist() for row, n in zip(completion_ids, lengths)]
    return build_group_batch(prompts, completions, pad_id)


class LikelihoodProbeMixin:
    """Mix into a GRPOTrainer subclass (before it in the bases). Pass probe_settings=ProbeSettings(...)
    and, for eval accuracy, eval_questions=[Question] and eval_task (with .reward)."""

    def __init__(self, *args, probe_settings: ProbeSettings | None = None, eval_questions=None, eval_task=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.probe_settings = probe_settings or ProbeSettings()
        if self.accelerator.num_processes > 1:
            raise ValueError(f"lld_probe needs whole groups on one process to score them, but this run has "
                             f"{self.accelerator.num_processes} processes; multi-process runs are not "
                             f"supported yet (groups would be split silently)")
        if self.probe_settings.eval_every and not eval_questions:
            raise ValueError("eval_every is set but no eval_questions were given")
        self._eval_questions = eval_questions or []
        self._eval_task = eval_task
        self._lld_rewards = None
        self._pending: _Pending | None = None
        self._probe_items = None
        self._probe_rng = np.random.default_rng(int(self.args.seed))
        self.store = RunStoreWriter(self.probe_settings.store_dir or self.args.output_dir)
        self.probe_seconds = 0.0    # time spent in the probes (for the overhead figure)
        self.old_policy_source = self._lld_old_policy_source()
        self._lld_loss_inputs = None
        self.last_probed: _Pending | None = None    # the last generation batch measured after its step
        self.add_callback(_ProbeCallback(self))

    # --- hooks a subclass can override -------------------------------------------------------------
    def _lld_method(self) -> str:
        return "grpo"

    def _lld_advantages(self, pending: _Pending, trl_advantages: torch.Tensor, completion_width: int):
        """Return the advantages to hand to TRL's loss ([B] or [B, T]) and the scaled-token mask."""
        return trl_advantages, torch.zeros_like(pending.selected)

    def _lld_meta(self) -> dict:
        return {"method": self._lld_method()}

    # --- TRL overrides -------------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._lld_rewards = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output
        start = time.perf_counter()
        pending = self._lld_new_pending(inputs, output)
        if self.old_policy_source == "training_forward":
            # scored by TRL's loss forward (_compute_loss); the row index survives TRL's shuffle
            output["lld_row"] = torch.arange(pending.batch.size, device=output["advantages"].device)
        else:
            scored = score_group(self._lld_model(), pending.batch, temperature=self.temperature, with_hidden=True,
                                 with_entropy=True, max_tokens=self.probe_settings.score_max_tokens)
            self._lld_fill_old_policy(pending, scored.token_logps, scored.entropy, scored.hidden)
            output["advantages"], pending.scaled = self._lld_advantages(pending, output["advantages"],
                                                                        output["completion_ids"].shape[1])
        self._pending = pending
        self.probe_seconds += time.perf_counter() - start
        return output

    def _compute_loss(self, model, inputs):
        pending = self._pending
        if pending is not None and pending.logp_before is None and "lld_row" in inputs:
            self._lld_loss_inputs = inputs      # picked up by the policy forward below
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._lld_loss_inputs = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        inputs, self._lld_loss_inputs = self._lld_loss_inputs, None
        if inputs is None:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              *args, **kwargs)
        with capture_backbone_hidden(self.accelerator.unwrap_model(model)) as captured:
            logps, entropies, *rest = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **{**kwargs, "compute_entropy": True})
        start = time.perf_counter()
        states = captured.get("hidden")
        if states is None or states.dim() != 3 or tuple(states.shape[:2]) != tuple(input_ids.shape):
            raise RuntimeError(f"the backbone hook saw {None if states is None else tuple(states.shape)} for inputs "
                               f"{tuple(input_ids.shape)}: this model's loss forward cannot give the old policy's "
                               f"hidden states; set probe_reuse_training_forward=False")
        # the state at position t-1 predicts token t: completion token j is predicted at L - logits_to_keep - 1 + j
        hidden = states[:, -logits_to_keep - 1:-1]
        self._lld_old_policy_from_loss(inputs, logps.detach(), entropies.detach(), hidden, logits_to_keep)
        self.probe_seconds += time.perf_counter() - start
        return (logps, entropies, *rest)

    def log(self, logs, start_time=None):
        super().log(logs, start_time)
        if self.state.log_history:
            start = time.perf_counter()
            self.store.append_scalars(self.state.global_step, self.state.log_history[-1])
            self.probe_seconds += time.perf_counter() - start

    # --- the probes ----------------------------------------------------------------------------------
    def _pad_id(self) -> int:
        pad = self.processing_class.pad_token_id
        return pad if pad is not None else 0

    def _lld_model(self):
        return self.accelerator.unwrap_model(self.model)

    def _lld_old_policy_source(self) -> str:
        """"training_forward" when TRL's loss forward runs at the old policy on whole groups and computes what
        a separate scoring would (one optimizer step per generation batch, all of it in one micro-batch, no
        autocast, no dropout); otherwise "separate_forward", a no-grad forward before the update."""
        args = self.args
        if not self.probe_settings.reuse_training_forward:
            return "separate_forward"
        if (args.steps_per_generation != 1 or self.num_iterations != 1 or args.gradient_accumulation_steps != 1
                or args.bf16 or args.fp16 or _has_dropout(self._lld_model())):
            return "separate_forward"
        return "training_forward"

    def _lld_new_pending(self, inputs, output) -> _Pending:
        """The generation batch as the probes keep it: groups checked, rewards -> correct, token layout."""
        settings = self.probe_settings
        group_size = self.num_generations
        count = output["completion_ids"].shape[0]
        if count == 0:
            raise ValueError("empty generation batch: no responses to probe")
        if count % group_size:
            raise ValueError(f"generation batch of {count} rows is not whole groups of {group_size}")
        prompts = [x["prompt"] for x in inputs]
        for start in range(0, count, group_size):
            if any(prompts[i] != prompts[start] for i in range(start, start + group_size)):
                raise ValueError("the generation batch is not laid out as consecutive groups of one prompt "
                                 "(TRL's RepeatSampler layout changed?)")
        weights = self.reward_weights.to(self._lld_rewards.device)
        rewards = (self._lld_rewards * weights[None, :]).nansum(dim=1).float().cpu()
        correct = correctness(rewards, settings.correct_threshold)
        batch = trl_rows_to_batch(output["prompt_ids"].cpu(), output["prompt_mask"].cpu(),
                                  output["completion_ids"].cpu(), output["completion_mask"].cpu(), self._pad_id())
        kept = torch.ones(count, dtype=torch.bool)
        if settings.response_fraction < 1.0:
            kept = torch.from_numpy(self._probe_rng.random(count) < settings.response_fraction)
        completions = self.processing_class.batch_decode(
            [batch.tokens[i, : int(batch.mask[i].sum())].tolist() for i in range(count)], skip_special_tokens=True)
        return _Pending(step=self.state.global_step + 1, batch=batch, rewards=rewards, correct=correct,
                        advantages=output["advantages"].detach().float().cpu().clone(),
                        prompts=[str(p) for p in prompts], completions=completions,
                        question_ids=[str(x.get("question_id", start // group_size))
                                      for start, x in enumerate(inputs)],
                        kept=kept, group_size=group_size)

    def _lld_fill_old_policy(self, pending: _Pending, token_logps, entropy, hidden) -> None:
        """The old policy's per-token log-probs, entropy and final hidden states [B, T(, d)] in generation
        order -> logp_before and the NTHR scores and selection of every group."""
        settings, batch, size = self.probe_settings, pending.batch, pending.group_size
        token_logps = token_logps.float().cpu().masked_fill(~batch.mask, 0.0)
        unembed = output_embedding_weight(self._lld_model()).detach().float()
        hidden = hidden.float().to(unembed.device)
        scores = torch.zeros_like(token_logps)
        selected = torch.zeros_like(batch.mask)
        taus = []
        for start in range(0, batch.size, size):
            rows = slice(start, start + size)
            group = nthr_token_scores(hidden[rows], unembed, batch.tokens[rows], batch.mask[rows],
                                      pending.correct[rows], temperature=self.temperature, vocab=settings.nthr_vocab,
                                      anchor_self=settings.nthr_anchor_self, token_logprobs=token_logps[rows])
            scores[rows] = group.scores.cpu()
            selected[rows] = nthr_select(group.scores, batch.mask[rows], pending.correct[rows], group.anchors,
                                         beta=settings.nthr_beta).cpu()
            taus.append(nthr_threshold(group.anchors, pending.correct[rows], settings.nthr_beta))
        pending.token_logps_before = token_logps
        pending.logp_before = sequence_logprob(token_logps, batch.mask)
        pending.entropy = entropy.float().cpu().masked_fill(~batch.mask, 0.0)
        pending.scores, pending.selected, pending.taus = scores, selected, taus
        pending.scaled = torch.zeros_like(selected)

    def _lld_old_policy_from_loss(self, inputs, logps, entropies, hidden, completion_width: int) -> None:
        """TRL's loss forward of the whole generation batch (rows in TRL's shuffled order) -> the pending
        batch's old-policy fields, and the method's advantages written into inputs before TRL reads them."""
        pending = self._pending
        rows = inputs["lld_row"].cpu()
        if not torch.equal(rows.sort().values, torch.arange(pending.batch.size)):
            raise RuntimeError(f"the loss forward holds {len(rows)} of the generation batch's {pending.batch.size} "
                               f"rows: old-policy scores need the whole batch in one micro-batch")
        order = rows.argsort()           # shuffled position of each generation-order row
        width = pending.batch.tokens.shape[1]
        if completion_width < width:
            raise RuntimeError(f"TRL scored {completion_width} completion positions, the batch has {width}")
        self._lld_fill_old_policy(pending, logps[order][:, :width], entropies[order][:, :width],
                                  hidden[order][:, :width])
        advantages, pending.scaled = self._lld_advantages(pending, inputs["advantages"][order], completion_width)
        inputs["advantages"] = advantages[rows.to(advantages.device)]

    def _lld_after_step(self) -> None:
        """After the optimizer step that used the pending generation batch: logp_after, store, metrics."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        if pending.logp_before is None:
            raise RuntimeError(f"the generation batch of step {pending.step} was never scored by the old policy: "
                               f"TRL's loss did not run on it (set reuse_training_forward=False)")
        self.last_probed = pending
        start = time.perf_counter()
        step = self.state.global_step
        batch = pending.batch
        kept = pending.kept.nonzero().flatten()
        logp_after = torch.full((batch.size,), math.nan, dtype=torch.float64)
        token_logps_after = torch.full(batch.mask.shape, math.nan)
        if len(kept):    # packed: the real tokens only, each group's prompt once (probe.packing)
            sub = batch.select(kept)
            after = score_group(self._lld_model(), sub, temperature=self.temperature,
                                max_tokens=self.probe_settings.score_max_tokens)
            token_logps_after[kept] = after.token_logps.float().cpu()
            logp_after[kept] = sequence_logprob(after.token_logps, sub.mask).double().cpu()
        lengths = batch.mask.sum(1)
        delta = logp_after - pending.logp_before.double()
        scaled_fraction = pending.scaled.sum(1).float() / lengths.clamp(min=1)
        responses = pd.DataFrame({
            "step": step, "question_id": pending.question_ids,
            "group_id": [f"{step}:{i // pending.group_size}" for i in range(batch.size)],
            "response_index": [i % pending.group_size for i in range(batch.size)],
            "prompt": pending.prompts, "completion": pending.completions,
            "reward": pending.rewards.double().numpy(), "correct": pending.correct.numpy(),
            "advantage": pending.advantages.double().numpy(), "n_tokens": lengths.numpy(),
            "logp_before": pending.logp_before.double().cpu().numpy(), "logp_after": logp_after.numpy(),
            "selected_fraction": scaled_fraction.double().numpy(),
            "nthr_selected_fraction": (pending.selected.sum(1).float() / lengths.clamp(min=1)).double().numpy(),
        })
        tokens = None
        if self.probe_settings.token_rows and len(kept):
            index = [(int(i), t) for i in kept for t in range(int(lengths[i]))]
            rows, cols = zip(*index) if index else ((), ())
            rows, cols = list(rows), list(cols)
            tokens = pd.DataFrame({
                "step": step, "group_id": [f"{step}:{r // pending.group_size}" for r in rows],
                "response_index": [r % pending.group_size for r in rows],
                "token_id": batch.tokens[rows, cols].numpy(), "position": cols,
                "logp_before": pending.token_logps_before[rows, cols].float().cpu().numpy(),
                "logp_after": token_logps_after[rows, cols].numpy(),
                "nthr_score": pending.scores[rows, cols].float().cpu().numpy(),
                "selected": pending.scaled[rows, cols].numpy(),
                "nthr_selected": pending.selected[rows, cols].numpy(),
                "entropy": pending.entropy[rows, cols].float().cpu().numpy(),
            })
        self.store.write_step(step, responses, tokens)
        metrics = self._metrics["train"]
        measured = ~torch.isnan(delta)
        correct_measured = pending.correct & measured
        lld_value = math.nan
        if correct_measured.any():
            lld_value = float((delta[correct_measured] <= 0).double().mean())
            metrics["lld/rate"].append(lld_value)
            metrics["lld/delta_correct"].append(float(delta[correct_measured].mean()))
        incorrect_measured = ~pending.correct & measured
        if incorrect_measured.any():
            metrics["lld/delta_incorrect"].append(float(delta[incorrect_measured].mean()))
            metrics["lld/selected_fraction"].append(float(scaled_fraction[~pending.correct].mean()))
        finite_taus = [t for t in pending.taus if math.isfinite(t)]
        if finite_taus:
            metrics["lld/tau"].append(float(np.mean(finite_taus)))
        metrics["lld/mean_length"].append(float(lengths.float().mean()))
        if not self._probe_items and self.probe_settings.probe_set_size:
            # drawn from the first step with a mixed group; its "before" scores are the state before that step
            self._probe_items = self._draw_probe_set(pending)
            if self._probe_items:
                self._score_probe_set(step - 1, before=pending)
        if self._probe_items and step % self.probe_settings.probe_every == 0:
            self._score_probe_set(step)
        if self.probe_settings.eval_every and step % self.probe_settings.eval_every == 0:
            metrics["eval/accuracy"].append(self.eval_accuracy())
        self._show_progress(float(pending.rewards.mean()), lld_value)
        self.probe_seconds += time.perf_counter() - start

    def _show_progress(self, reward: float, lld_rate: float) -> None:
        """reward and LLD rate of the step on TRL's progress bar."""
        from transformers.trainer_callback import ProgressCallback
        for callback in self.callback_handler.callbacks:
            bar = getattr(callback, "training_bar", None) if isinstance(callback, ProgressCallback) else None
            if bar is not None:
                bar.set_postfix(reward=f"{reward:.2f}", lld_rate=f"{lld_rate:.2f}", refresh=False)

    def _draw_probe_set(self, pending: _Pending) -> list[dict]:
        """Half correct responses, half near misses (incorrect responses of mixed groups), distinct, taken
        round-robin over the mixed groups of the step; empty when the step has no mixed group."""
        size = self.probe_settings.probe_set_size
        batch = pending.batch
        seen, per_kind = set(), {"correct": [], "near_miss": []}
        for round_index in range(pending.group_size):
            for start in range(0, batch.size, pending.group_size):
                group_correct = pending.correct[start: start + pending.group_size]
                if not (group_correct.any() and not group_correct.all()):
                    continue
                for kind, wanted in (("correct", True), ("near_miss", False)):
                    rows = [i for i in range(start, start + pending.group_size) if bool(pending.correct[i]) == wanted]
                    if round_index < len(rows):
                        i = rows[round_index]
                        key = (tuple(batch.input_ids[i, : int(batch.prompt_lengths[i])].tolist()),
                               tuple(batch.tokens[i, : int(batch.mask[i].sum())].tolist()))
                        if key not in seen:
                            seen.add(key)
                            per_kind[kind].append(i)
        near_miss = per_kind["near_miss"][: size // 2]
        correct = per_kind["correct"][: size - len(near_miss)]
        near_miss = per_kind["near_miss"][: size - len(correct)]
        items = []
        for probe_id, (kind, i) in enumerate([("correct", i) for i in correct] + [("near_miss", i) for i in near_miss]):
            items.append({"probe_id": probe_id, "kind": kind, "question_id": pending.question_ids[i],
                          "prompt_ids": batch.input_ids[i, : int(batch.prompt_lengths[i])].tolist(),
                          "completion_ids": batch.tokens[i, : int(batch.mask[i].sum())].tolist(), "row": i})
        if items:
            write_json(items, self.store.path / "probe_items.json")   # a resumed run re-scores the same set
        return items

    def _score_probe_set(self, step: int, before: _Pending | None = None) -> None:
        items = self._probe_items
        if not items:
            return
        if before is not None:    # step 0: the old policy's scores of the first batch
            logps = [float(before.logp_before[item["row"]]) for item in items]
        else:
            batch = build_group_batch([it["prompt_ids"] for it in items], [it["completion_ids"] for it in items],
                                      self._pad_id())
            scored = score_group(self._lld_model(), batch, temperature=self.temperature,
                                 max_tokens=self.probe_settings.score_max_tokens)
            logps = sequence_logprob(scored.token_logps, batch.mask).tolist()
        rows = pd.DataFrame({"step": step, "probe_id": [it["probe_id"] for it in items],
                             "kind": [it["kind"] for it in items], "question_id": [it["question_id"] for it in items],
                             "n_tokens": [len(it["completion_ids"]) for it in items], "logp": logps})
        self.store.append_probe_set(rows)

    @torch.no_grad()
    def eval_accuracy(self) -> float:
        """Greedy accuracy on the held-out questions (the paper's evaluation protocol)."""
        from ..models.generation import greedy_completions
        from ..tasks import format_prompt
        tokenizer = self.processing_class
        prompts = [format_prompt(tokenizer, q.prompt) for q in self._eval_questions]
        width = self.probe_settings.eval_max_new_tokens or self.args.max_completion_length
        completions = greedy_completions(self._lld_model(), tokenizer, prompts, max_new_tokens=width)
        hits = [self._eval_task.reward(c.text, q.answer).reward for c, q in zip(completions, self._eval_questions)]
        return float(np.mean(hits))

    def _lld_train_begin(self) -> None:
        step = self.state.global_step
        if step == 0 and any((self.store.path / "responses").glob("step=*.parquet")):
            raise FileExistsError(f"{self.store.path} already holds a run store: resume it (--resume, with "
                                  f"checkpoints from --save-steps) or write to a new folder")
        if step > 0:                 # resumed from a checkpoint: forget what came after it
            self.store.truncate_after(step)
            items = self.store.path / "probe_items.json"
            if items.is_file() and self.store.has_probe_rows():
                self._probe_items = json.loads(items.read_text())
        meta = {**provenance(), "method": self._lld_method(), "probe": asdict(self.probe_settings),
                "group_size": self.num_generations, "temperature": self.temperature, "seed": self.args.seed,
                "learning_rate": self.args.learning_rate, "loss_type": self.loss_type, "kl_beta": self.beta,
                "epsilon_low": self.epsilon_low, "epsilon_high": self.epsilon_high,
                "max_completion_length": self.args.max_completion_length,
                "scale_rewards": self.scale_rewards, "old_policy_source": self.old_policy_source,
                "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                **self._lld_meta(), **self.probe_settings.extra_meta}
        self.store.write_meta(meta)
        if step == 0 and self.probe_settings.eval_every:
            self.store.append_scalars(0, {"eval/accuracy": self.eval_accuracy()})


class _ProbeCallback(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        start = time.perf_counter()
        self.trainer._lld_train_begin()
        self.trainer.probe_seconds += time.perf_counter() - start

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        # the generation batch is finished once the steps that reuse it are done
        generate_every = trainer.args.steps_per_generation * trainer.num_iterations
        if trainer._step % generate_every == 0:
            trainer._lld_after_step()
