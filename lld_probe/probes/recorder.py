"""The probe recorder: likelihood dynamics around each update, with no training framework inside.

A training loop (lld_probe.integrations.trl for TRL) drives it, once per generation batch:

    generation = recorder.begin_batch(step, prompt_ids, completion_ids, rewards=..., advantages=..., ...)
    probed = recorder.score_old_policy(generation, token_logps, entropy, hidden, unembed)   # before the update
    ... the loss uses probed.loss_advantages; the optimizer steps ...
    record = recorder.finish_step(model)     # re-scores after the update, writes the store, returns metrics

Each call returns an immutable record; the recorder keeps the batches awaiting their update (a FIFO:
`pending_batches`, oldest first; a loop that generates again before a batch's update is done holds
several), the probe set and the run store it writes.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import deque

import numpy as np
import pandas as pd
import torch

from ..core import configured_rule, correct_from_rewards, sequence_logprob
from ..scoring import build_group_batch, score_group
from ..scoring.lockstep import score_in_lockstep
from ..scoring.precision import low_precision_weights
from ..scoring.resolution import layout_resolution, layout_resolution_in_lockstep
from ..store.atomic import write_json
from ..store.run_store import RunStoreWriter
from .clock import Clock, timed
from .distributed import RowLayout, SingleProcess
from .metrics import step_metrics
from .old_policy import score_old_policy
from .probe_set import draw_probe_set, probe_candidates, probe_set_rows, score_probe_set
from .records import GenerationBatch, ProbedBatch, StepRecord
from .rows import response_rows, token_rows
from .settings import ProbeSettings
from .weighting import method_weighting

# how a TRL run gets another store or continues this one (the error for a folder that already holds a store)
TRL_RESUME_ADVICE = ("give the trainer another output_dir, or resume from one of its checkpoints "
                     "(trainer.train(resume_from_checkpoint=True), with checkpoints from save_steps)")


class ProbeRecorder:
    def __init__(self, settings: ProbeSettings, store_dir, *, temperature: float, pad_id: int, comm=None,
                 sharded: bool = False):
        self.settings = settings
        # a sharded model (FSDP2, ZeRO-3) gathers parameters in every forward: all processes score in lockstep
        self.sharded = sharded
        self.temperature = temperature
        self.pad_id = pad_id
        self.comm = comm or SingleProcess()
        distributed = self.comm.world_size > 1
        self.store = RunStoreWriter(store_dir, rank=self.comm.rank if distributed else None,
                                    is_main=self.comm.rank == 0)
        self._pending: deque[ProbedBatch] = deque()  # batches awaiting their optimizer step(s), oldest first
        self.last: StepRecord | None = None           # the last step measured after its update
        self.probe_items: list[dict] | None = None
        self.clock = Clock()                          # time inside the probes (for the overhead figure)
        self._rescored_rng = np.random.default_rng(int(settings.seed))
        self._checked_layout: RowLayout | None = None

    @property
    def pending(self) -> ProbedBatch | None:
        """The oldest batch awaiting its optimizer step(s): the next one finish_step records."""
        return self._pending[0] if self._pending else None

    @property
    def pending_batches(self) -> tuple[ProbedBatch, ...]:
        """Every batch awaiting its optimizer step(s), oldest first."""
        return tuple(self._pending)

    # --- a run --------------------------------------------------------------------------------------
    @timed
    def begin_run(self, meta: dict, *, resumed_step: int = 0, resume_advice: str = TRL_RESUME_ADVICE) -> None:
        """Write meta.json; a new run refuses a folder that holds a store (the error ends with resume_advice,
        the trainer's own settings for another folder or a resume), a resumed one forgets what came after its
        checkpoint and picks its probe set up again."""
        store = self.store
        if resumed_step == 0 and store.has_steps():
            raise FileExistsError(f"{store.path} already holds a run store: {resume_advice}")
        if resumed_step > 0:
            store.truncate_after(resumed_step)
            items = store.path / "probe_items.json"
            if items.is_file() and store.has_probe_rows():
                self.probe_items = json.loads(items.read_text())
        # the rule that decides correctness (core.correctness), as this recorder applies it
        store.write_meta({**meta, "world_size": self.comm.world_size,
                          "correctness_rule": configured_rule(self.settings.correct_threshold)})
        self.comm.barrier()          # no process writes a step before the main one has truncated

    @timed
    def log_scalars(self, step: int, values: dict) -> None:
        """The trainer's logged values of a step (numbers only) into the store's scalars."""
        self.store.append_scalars(step, values)

    # --- one generation batch -----------------------------------------------------------------------
    @timed
    def begin_batch(self, step: int, prompt_ids, completion_ids, *, rewards: torch.Tensor,
                    deciding_rewards: torch.Tensor, advantages: torch.Tensor, group_size: int, prompts, completions,
                    question_ids, prompt_keys=None, truncated=None, measured=None,
                    sampler_masked=None) -> GenerationBatch:
        """This process's rows of a generation batch (generation order). rewards [B]: this process's rewards
        as logged; deciding_rewards: the reward that decides correctness for ALL processes' rows in order
        (to know every group's correctness); prompt_keys (one hashable per row, default the prompt) must
        agree within each group; truncated [B]: responses the trainer masked out (their completion_ids are
        empty: no measured tokens); sampler_masked [B]: responses the trainer's importance sampling took out of
        the update (completion_ids empty too); measured (optional): per completion, one flag per token, False
        for a token the policy did not write (a tool's or environment's output: context for later tokens, never measured)."""
        count = len(completion_ids)
        if count == 0:
            raise ValueError("empty generation batch: no responses to probe")
        layout = RowLayout(self.comm.rank, self.comm.world_size, count, group_size)
        self._check_layout(layout, list(prompt_keys if prompt_keys is not None else prompts), deciding_rewards)
        # binary, threshold, or (non-binary) above the group's mean: every group from all processes' rewards
        global_correct = correct_from_rewards(deciding_rewards.float().cpu(), self.settings.correct_threshold,
                                              groups=torch.arange(deciding_rewards.numel()) // group_size)
        correct = global_correct[layout.global_rows()]
        groups = {part.group: global_correct[part.group * group_size: (part.group + 1) * group_size]
                  for part in layout.groups()}
        rescored = torch.ones(count, dtype=torch.bool)
        if self.settings.probe_response_fraction < 1.0:
            rescored = torch.from_numpy(self._rescored_rng.random(count) < self.settings.probe_response_fraction)
        return GenerationBatch(
            step=step, batch=build_group_batch(prompt_ids, completion_ids, self.pad_id, measured), layout=layout,
            rewards=rewards.float().cpu(), correct=correct, group_correct=groups,
            advantages=advantages.detach().float().cpu().clone(), prompts=tuple(str(p) for p in prompts),
            completions=tuple(completions), question_ids=tuple(str(q) for q in question_ids), rescored=rescored,
            truncated=torch.zeros(count, dtype=torch.bool) if truncated is None else torch.as_tensor(truncated),
            sampler_masked=None if sampler_masked is None else torch.as_tensor(sampler_masked, dtype=torch.bool))

    @timed
    def score_old_policy(self, generation: GenerationBatch, token_logps, entropy, hidden, unembed,
                         logit_transform=None) -> ProbedBatch:
        """The old policy's scores [B, T] (hidden [B, T, d]) in generation order -> NTHR selection and the
        method's advantages; the result joins the batches awaiting their update (`pending_batches`).
        logit_transform: the model's map from W h to its logits (lld_probe.scoring.logit_transform_of; None:
        logits = W h)."""
        old = score_old_policy(generation, token_logps, entropy, hidden, unembed.detach().float(), self.settings,
                               self.comm, temperature=self.temperature, logit_transform=logit_transform)
        loss_advantages, scaled = method_weighting(generation, old, self.settings, self.comm)
        probed = ProbedBatch(generation, old, loss_advantages, scaled)
        self._pending.append(probed)
        return probed

    def score(self, model, batch, *, with_hidden: bool = False, with_entropy: bool = False):
        """score_group of this process's rows (batch None: none, on a sharded model only), in lockstep with
        the other processes when the model is sharded (lld_probe.scoring.lockstep)."""
        max_tokens = self.settings.probe_score_max_tokens
        if self.sharded:
            return score_in_lockstep(model, batch, self.comm, temperature=self.temperature, with_hidden=with_hidden,
                                     with_entropy=with_entropy, max_tokens=max_tokens)
        return score_group(model, batch, temperature=self.temperature, with_hidden=with_hidden,
                           with_entropy=with_entropy, max_tokens=max_tokens)

    @timed
    def finish_step(self, model, *, eval_accuracy=None, token_logps_after=None, step: int | None = None,
                    batches: int = 1, window_steps: int | None = None) -> StepRecord:
        """After the optimizer step(s) that used the oldest `batches` pending batches: logp_after, the store's
        rows (all of them under one step, group indices following on from one batch to the next), the probe
        set, and the step's metrics (over all of them). step: the optimizer step just taken (default: the one
        the oldest batch was generated for); a response's window_steps = step - generation.step + 1, the
        optimizer steps between its old policy (the parameters it was generated with) and its logp_after.
        window_steps: that number given, for a trainer whose step counts generation batches (verl's global step,
        several optimizer steps each).
        eval_accuracy: a callable run every eval_every steps.
        token_logps_after [B, T]: this process's rows already re-scored by the caller (a sharded engine, whose
        forwards every process must run alike; one batch only); model then only scores the probe set, and None
        skips it."""
        if batches < 1 or len(self._pending) < batches:
            raise RuntimeError(f"finish_step for {batches} batch(es) with {len(self._pending)} pending: "
                               f"call score_old_policy for each generation batch before the update that uses it")
        if token_logps_after is not None and batches != 1:
            raise ValueError(f"token_logps_after re-scores one batch, finish_step was asked for {batches}")
        finished = [self._pending.popleft() for _ in range(batches)]
        step = finished[0].generation.step if step is None else int(step)
        responses, tokens, deltas, first_group = [], [], [], 0
        for probed in finished:
            if step < probed.generation.step:
                raise ValueError(f"finish_step at step {step} for a batch generated for step "
                                 f"{probed.generation.step}: its update is not done yet")
            logp_after, token_logps = self._logp_after(model, probed, token_logps_after)
            window = step - probed.generation.step + 1 if window_steps is None else int(window_steps)
            responses.append(response_rows(probed, logp_after, step=step, first_group=first_group,
                                           window_steps=window))
            if self.settings.probe_token_rows:
                tokens.append(token_rows(probed, token_logps, step=step, first_group=first_group))
            deltas.append(logp_after - probed.old.logp_before.double())
            layout = probed.generation.layout
            first_group += layout.local_rows * layout.world_size // layout.group_size
        responses = pd.concat(responses, ignore_index=True)
        tokens = [t for t in tokens if t is not None]
        tokens = pd.concat(tokens, ignore_index=True) if tokens else None
        self.store.write_step(step, responses, tokens)
        metrics = step_metrics(finished, deltas, self.comm)
        last_batch = finished[-1].generation.batch
        if token_logps_after is None and model is not None and self.sharded and low_precision_weights(model):
            # every process joins the same forwards (its rows or idle ones); the max over processes
            metrics["lld/delta_resolution"] = layout_resolution_in_lockstep(
                model, last_batch, self.comm, temperature=self.temperature)
        elif token_logps_after is None and model is not None and low_precision_weights(model) and last_batch.mask.any():
            # bf16/fp16 weights: a |Delta| below this is rounding, not likelihood displacement
            metrics["lld/delta_resolution"] = layout_resolution(model, last_batch, temperature=self.temperature)
        if self.comm.world_size > 1:    # what this process sent for split groups' NTHR so far (0: whole groups)
            metrics["lld/nthr_exchange_bytes"] = float(self.comm.traffic.get("nthr", 0))
        if model is not None:
            self._probe_set_step(model, finished, step)
        if self.settings.eval_every and step % self.settings.eval_every == 0 and eval_accuracy is not None:
            metrics["eval/accuracy"] = eval_accuracy()
        self.last = StepRecord(step, responses, tokens, metrics, finished[-1], tuple(finished))
        return self.last

    def _logp_after(self, model, probed: ProbedBatch, token_logps_given) -> tuple[torch.Tensor, torch.Tensor]:
        """(logp_after [B] float64, token log-probs [B, T]) of the batch's re-scored responses after the update;
        NaN where not measured."""
        batch, settings = probed.generation.batch, self.settings
        rescored = (probed.generation.rescored & batch.measured.any(1)).nonzero().flatten()   # with measured tokens
        logp_after = torch.full((batch.size,), math.nan, dtype=torch.float64)
        token_logps_after = torch.full(batch.mask.shape, math.nan)
        if token_logps_given is not None and tuple(token_logps_given.shape) != tuple(batch.mask.shape):
            raise ValueError(f"token_logps_after has shape {tuple(token_logps_given.shape)}, the batch's tokens "
                             f"{tuple(batch.mask.shape)}")
        if len(rescored) and token_logps_given is not None:
            token_logps_after[rescored] = token_logps_given.float().cpu()[rescored].masked_fill(~batch.mask[rescored], 0.0)
            logp_after[rescored] = sequence_logprob(token_logps_after[rescored], batch.measured[rescored]).double()
        elif len(rescored):    # packed: the real tokens only, each prompt once (lld_probe.scoring.packing)
            sub = batch.select(rescored)
            after = self.score(model, sub)
            token_logps_after[rescored] = after.token_logps.float().cpu()
            logp_after[rescored] = sequence_logprob(after.token_logps, sub.measured).double().cpu()
        elif self.sharded and model is not None and token_logps_given is None:
            self.score(model, None)     # nothing re-scored here: the forwards of the other processes still need us
        return logp_after, token_logps_after

    # --- the probe set ------------------------------------------------------------------------------
    def _probe_set_step(self, model, finished: list[ProbedBatch], step: int) -> None:
        settings = self.settings
        for probed in finished:
            if self.probe_items or not settings.probe_set_size:
                break
            # drawn from the first batch with a mixed group; its "before" scores are its old policy's: the state
            # after the optimizer step before the one it was generated for
            candidates = probe_candidates(probed, self.comm)
            self.probe_items = draw_probe_set(candidates, settings.probe_set_size, probed.generation.group_size)
            if self.probe_items:
                if self.store.is_main:     # a resumed run re-scores the same set
                    write_json(self.probe_items, self.store.path / "probe_items.json")
                self.store.append_probe_set(probe_set_rows(self.probe_items, probed.generation.step - 1,
                                                           [it["logp_before"] for it in self.probe_items]))
        if self.probe_items and step % settings.probe_every == 0:
            logps = score_probe_set(model, self.probe_items, pad_id=self.pad_id, score=self.score)
            self.store.append_probe_set(probe_set_rows(self.probe_items, step, logps))

    # --- checks -------------------------------------------------------------------------------------
    def _check_layout(self, layout: RowLayout, keys: list, deciding_rewards: torch.Tensor) -> None:
        """Every process holds the same number of rows, the rewards cover them all, and each group's rows
        share one prompt; otherwise a ValueError (on every process) names the problem. Whole groups are
        checked locally; a split layout compares prompt digests across processes."""
        digests = [zlib.crc32(str(key).encode()) for key in keys]
        first_row = layout.offset
        if layout.world_size > 1 and (layout.splits_groups or self._checked_layout != layout):
            gathered = self.comm.all_gather_object((layout.local_rows, digests if layout.splits_groups else None),
                                                   purpose="layout")
            counts = [count for count, _ in gathered]
            if len(set(counts)) != 1:
                raise ValueError(f"the processes disagree on the group layout: rows per process {counts} "
                                 f"(every process must hold the same number of rows of the generation batch)")
            if layout.splits_groups:
                digests, first_row = [d for _, rows in gathered for d in rows], 0
        total = layout.local_rows * layout.world_size
        if deciding_rewards.numel() != total:
            raise ValueError(f"the rewards cover {deciding_rewards.numel()} responses, but {layout.world_size} "
                             f"process(es) x {layout.local_rows} rows = {total}")
        if total % layout.group_size:
            raise ValueError(f"generation batch of {total} rows is not whole groups of {layout.group_size}")
        for start in range(0, len(digests), layout.group_size):
            if len(set(digests[start: start + layout.group_size])) != 1:
                raise ValueError(f"the rows of group {(first_row + start) // layout.group_size} do not share one "
                                 f"prompt: the generation batch is not laid out as consecutive groups of "
                                 f"{layout.group_size} (a custom sampler, or TRL's RepeatSampler changed?)")
        self._checked_layout = layout
