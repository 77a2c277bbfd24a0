"""The probes on TRL's GRPOTrainer, as one mixin: `class MyTrainer(LikelihoodProbeMixin, GRPOTrainer)`.

A thin adapter: it reads what the recorder needs out of TRL's generation batch, hands TRL's loss the method's
advantages, and calls the recorder after the optimizer step. All the probes' logic lives in
lld_probe.probes.ProbeRecorder, which is also the run store's only writer. Where the old policy's scores come
from (TRL's own loss forward, or a separate no-grad forward) is decided once, when the trainer is built
(old_policy_source.py); what must pass between TRL's calls travels in one TRLHandoff (handoff.py).

TRL internals this relies on, each pinned by tests/test_trl_pins.py with a message naming what moved:
_calculate_rewards (gathered rewards per function), _generate_and_score_completions (the generation batch: G
consecutive rows per prompt, this process's contiguous slice of it), _compute_loss and the
_get_per_token_logps_and_entropies call it makes before reading inputs["advantages"], log, the `_step`
counter of micro-steps (with _prepare_inputs' generation schedule: batch_windows.py) and the `_metrics` store
of logged values.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import asdict, replace

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

from ...probes import ProbeRecorder, ProbeSettings, communicator_for
from ...probes.evaluation import greedy_accuracy
from ...scoring import capture_backbone_hidden, logit_transform_of
from ...scoring.precision import low_precision_weights, probe_precision
from ...store.provenance import provenance
from .advantage_sign import check_advantage_sign_applies
from .batch_windows import batch_end, run_windows
from ..sharding import FSDP1_REFUSAL, full_output_embedding, refuse_unsupported_sharding
from .handoff import TRLHandoff
from .old_policy_source import decide_old_policy_source
from .sampler import leave_out_sampler_masked, with_sampler_side


def completion_rows(completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> list[list[int]]:
    """TRL's right-padded completions -> token lists (every token in the sequence, a tool's output included:
    TRL marks that in tool_mask, see measured_flags). TRL's completion mask is a prefix (ones up to and
    including EOS); anything else is refused."""
    completion_mask = completion_mask.bool()
    lengths = completion_mask.sum(1)
    prefix = torch.arange(completion_mask.shape[1], device=completion_mask.device)[None, :] < lengths[:, None]
    if not torch.equal(prefix, completion_mask):
        raise ValueError("completion_mask is not a prefix mask (masked tokens inside a completion that TRL's "
                         "tool_mask does not carry): not supported; mark tool or environment output with "
                         "tool_mask / env_mask instead")
    return [row[: int(n)].tolist() for row, n in zip(completion_ids, lengths)]


def measured_flags(tool_mask: torch.Tensor | None, completions: list[list[int]]) -> list[list[bool]] | None:
    """TRL's tool_mask [B, T] (1 on the policy's tokens, 0 on a tool's or an environment's output: `tools=`,
    environment_factory, or a rollout_func's env_mask) -> per completion, one flag per token (True: measured);
    None without a tool mask (every token measured). The loss multiplies completion_mask by it."""
    if tool_mask is None:
        return None
    flags = tool_mask.detach().cpu().bool()
    if flags.dim() != 2 or flags.shape[0] != len(completions) or flags.shape[1] < max(map(len, completions), default=0):
        raise ValueError(f"tool_mask has shape {tuple(flags.shape)}, the batch {len(completions)} completions of up "
                         f"to {max(map(len, completions), default=0)} tokens")
    return [row[: len(ids)].tolist() for row, ids in zip(flags, completions)]


def _dataset_description(dataset) -> str:
    """What a Python-API run trained on, when it names no task: the dataset's size and columns."""
    if dataset is None:
        return "unknown"
    columns = getattr(dataset, "column_names", None)
    size = len(dataset) if hasattr(dataset, "__len__") else "?"
    return f"train_dataset: {size} rows" + (f", columns {list(columns)}" if columns else "")


def _prompt_id(prompt) -> str:
    """A question id from the prompt itself (a stable digest) when the dataset has no question_id column."""
    return "prompt-" + hashlib.sha256(str(prompt).encode()).hexdigest()[:12]


def pad_advantages(advantages: torch.Tensor, width: int) -> torch.Tensor:
    """Per-token advantages [B, T] widened with zeros to TRL's completion width; [B] passes through."""
    if advantages.dim() == 1:
        return advantages
    padded = torch.zeros(advantages.shape[0], width, dtype=advantages.dtype, device=advantages.device)
    padded[:, : advantages.shape[1]] = advantages
    return padded


def _refuse_fsdp1(trainer) -> None:
    """FSDP1 is refused when the trainer is built: transformers' Trainer sets is_fsdp_enabled when accelerate
    holds an FSDP plugin, whose fsdp_version says which FSDP (1 unless set)."""
    fsdp_plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if trainer.is_fsdp_enabled and getattr(fsdp_plugin, "fsdp_version", 1) == 1:
        raise ValueError(FSDP1_REFUSAL)


def _refuse_vision_language(model) -> None:
    """The probes' own forwards pass token ids only: a vision-language model's likelihoods would be those of
    the text without its images. Refused before training rather than measured wrong."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "vision_config", None) is not None:
        raise ValueError(f"{type(model).__name__} is a vision-language model (config.vision_config is set): the "
                         f"probes' scoring forwards pass no pixel_values, so its likelihoods would be the text's "
                         f"alone; vision-language models are not supported")


class LikelihoodProbeMixin:
    """Mix into a GRPOTrainer subclass, before it in the bases. The probe settings come from
    probe_settings=ProbeSettings(...), else from an LLDConfig passed as args, else ProbeSettings' defaults
    (method grpo: the probes measure and change nothing). For eval accuracy pass eval_questions=[Question] and
    eval_task (with .reward)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        order = cls.__mro__
        if issubclass(cls, GRPOTrainer) and order.index(GRPOTrainer) < order.index(LikelihoodProbeMixin):
            raise TypeError(f"{cls.__name__}: LikelihoodProbeMixin must come before GRPOTrainer in the bases "
                            f"(class {cls.__name__}(LikelihoodProbeMixin, GRPOTrainer)), else TRL's methods hide "
                            f"the probes'")

    def __init__(self, *args, probe_settings: ProbeSettings | None = None, eval_questions=None, eval_task=None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        _refuse_vision_language(self.accelerator.unwrap_model(self.model))
        logit_transform_of(self.accelerator.unwrap_model(self.model))    # refuses a head NTHR cannot follow
        _refuse_fsdp1(self)
        # transformers deprecates the name TRL calls every step; the message says nothing to a user of this run
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        if probe_settings is None:
            probe_settings = self.args.probe_settings() if hasattr(self.args, "probe_settings") else ProbeSettings()
        settings = replace(probe_settings, seed=int(self.args.seed))
        if settings.eval_every and not eval_questions:
            raise ValueError("eval_every is set but no eval_questions were given to the trainer")
        self.probe_settings = settings
        self._eval_questions = eval_questions or []
        self._eval_task = eval_task
        pad = self.processing_class.pad_token_id
        self.recorder = ProbeRecorder(settings, settings.store_dir or self.args.output_dir,
                                      temperature=self.temperature, pad_id=pad if pad is not None else 0,
                                      comm=communicator_for(self.accelerator.num_processes, self.accelerator.device))
        source = decide_old_policy_source(settings.probe_reuse_training_forward, self.args, self.num_iterations,
                                          self._lld_model())
        self.old_policy_source, self.old_policy_source_reason = source.name, source.reason
        self._lld_handoff = TRLHandoff()
        self.add_callback(_ProbeCallback(self))

    # views kept for scripts and tests
    store = property(lambda self: self.recorder.store)
    probe_seconds = property(lambda self: self.recorder.clock.seconds)
    last_probed = property(lambda self: self.recorder.last.probed if self.recorder.last else None)
    pending_probed = property(lambda self: self.recorder.pending)

    def _lld_model(self):
        return self.accelerator.unwrap_model(self.model)

    # --- TRL overrides -------------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._lld_handoff.rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output
        generation = with_sampler_side(self._lld_begin_batch(inputs, output), output)
        if self.old_policy_source == "training_forward":
            # scored by TRL's loss forward (_get_per_token_logps_and_entropies); the row index survives TRL's shuffle
            self._lld_handoff.awaiting_loss = generation
            output["lld_row"] = torch.arange(output["completion_ids"].shape[0], device=output["advantages"].device)
            return output
        with self.recorder.clock.measure():
            scored = self.recorder.score(self._lld_model(), generation.batch, with_hidden=True, with_entropy=True)
        with full_output_embedding(self._lld_model()) as unembed:
            probed = self.recorder.score_old_policy(generation, scored.token_logps, scored.entropy, scored.hidden,
                                                    unembed, logit_transform_of(self._lld_model()))
        output["advantages"] = pad_advantages(probed.loss_advantages, output["completion_ids"].shape[1]).to(
            output["advantages"].device)
        return output

    def _compute_loss(self, model, inputs):
        handoff = self._lld_handoff
        handoff.loss_inputs = inputs if handoff.awaiting_loss is not None and "lld_row" in inputs else None
        try:
            return super()._compute_loss(model, inputs)
        finally:
            handoff.loss_inputs = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        inputs = self._lld_handoff.take_loss_inputs()      # set only for the loss forward of an awaiting batch
        if inputs is None:
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              *args, **kwargs)
        with capture_backbone_hidden(self.accelerator.unwrap_model(model)) as captured:
            logps, entropies, *rest = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, *args, **{**kwargs, "compute_entropy": True})
        states = captured.get("hidden")
        if states is None or states.dim() != 3 or tuple(states.shape[:2]) != tuple(input_ids.shape):
            raise RuntimeError(f"the backbone hook saw {None if states is None else tuple(states.shape)} for inputs "
                               f"{tuple(input_ids.shape)}: this model's loss forward cannot give the old policy's "
                               f"hidden states; set probe_reuse_training_forward=False")
        # the state at position t-1 predicts token t: completion token j is predicted at L - logits_to_keep - 1 + j
        hidden = states[:, -logits_to_keep - 1:-1]
        self._lld_old_policy_from_loss(inputs, logps.detach(), entropies.detach(), hidden, logits_to_keep)
        return (logps, entropies, *rest)

    def log(self, logs, start_time=None):
        super().log(logs, start_time)
        if self.state.log_history:
            self.recorder.log_scalars(self.state.global_step, self.state.log_history[-1])

    # --- the generation batch -> the recorder ---------------------------------------------------------
    def _lld_begin_batch(self, inputs, output):
        """TRL's generation batch (this process's rows) -> the recorder's GenerationBatch; TRL is done with it
        after a known micro-step (batch_windows.py), when the callback takes its record."""
        rewards_per_func = self._lld_handoff.take_rewards().float().cpu()        # all processes' rows
        logged = (rewards_per_func * self.reward_weights.float().cpu()[None, :]).nansum(dim=1)   # TRL's reward
        count = output["completion_ids"].shape[0]
        offset = self.accelerator.process_index * count
        prompt_ids = [row[mask.bool()].tolist() for row, mask in zip(output["prompt_ids"].cpu(),
                                                                     output["prompt_mask"].cpu())]
        completion_ids, truncated, texts = self._lld_completions(output)
        completion_ids, masked = leave_out_sampler_masked(output, completion_ids)   # sampler.py
        prompts, question_ids = self._lld_prompts(inputs, prompt_ids)
        generation = self.recorder.begin_batch(
            self.state.global_step + 1, prompt_ids, completion_ids, rewards=logged[offset: offset + count],
            deciding_rewards=self._lld_deciding_rewards(rewards_per_func, logged), advantages=output["advantages"],
            group_size=self.num_generations, prompts=prompts, completions=texts, question_ids=question_ids,
            truncated=truncated, sampler_masked=masked,
            measured=measured_flags(output.get("tool_mask"), completion_ids))
        self._lld_handoff.batch_ends.append(batch_end(self._step, self.args.steps_per_generation * self.num_iterations))
        return generation

    def _lld_prompts(self, inputs, prompt_ids) -> tuple[list, list]:
        """(prompts, question ids) of the rows. With environment_factory the prompt is what TRL generated from
        (its prompt tokens, decoded: the data set's prompt, if any, plus what env.reset() returned); the question
        id is the data set's question_id, else the environment's (an attribute question_id after reset), else a
        digest of the prompt."""
        environments = getattr(self, "environments", None)
        if not environments:
            return [x["prompt"] for x in inputs], [x.get("question_id", _prompt_id(x["prompt"])) for x in inputs]
        prompts = self.processing_class.batch_decode(prompt_ids, skip_special_tokens=False)
        question_ids = []
        for x, environment, prompt in zip(inputs, environments, prompts, strict=True):
            given = x.get("question_id", getattr(environment, "question_id", None))
            question_ids.append(given if given is not None else _prompt_id(prompt))
        return prompts, question_ids

    def _lld_deciding_rewards(self, rewards_per_func, logged):
        """The reward correctness is read from: one reward function's (correct_reward) or TRL's weighted sum."""
        name = self.probe_settings.correct_reward
        if name is None:
            check_advantage_sign_applies(logged, threshold=self.probe_settings.correct_threshold,
                                         aggregation=self.multi_objective_aggregation,
                                         reward_count=len(self.reward_funcs))
            return logged
        names = list(self.reward_func_names)
        if name not in names:
            raise ValueError(f"correct_reward {name!r} is not one of this trainer's reward functions {names}")
        return rewards_per_func[:, names.index(name)]

    def _lld_completions(self, output):
        """(completion token lists, truncated flags, texts). With mask_truncated_completions, TRL masks a
        completion cut at the length limit out of the loss: it is kept as text, with no tokens. A tool's output
        inside a completion stays in its token list (context for later tokens); measured_flags marks it."""
        ids, mask = output["completion_ids"].cpu(), output["completion_mask"].cpu()
        masked_out = ~mask.bool().any(1) if getattr(self, "mask_truncated_completions", False) else \
            torch.zeros(ids.shape[0], dtype=torch.bool)
        pad = self.processing_class.pad_token_id
        full = [row[row != pad].tolist() if pad is not None else row.tolist() for row in ids]
        present = completion_rows(ids, mask)
        texts = self.processing_class.batch_decode([f if cut else m for f, m, cut in zip(full, present, masked_out)],
                                                   skip_special_tokens=True)
        return present, masked_out.tolist(), texts

    def _lld_old_policy_from_loss(self, inputs, logps, entropies, hidden, completion_width: int) -> None:
        """The loss forward of the whole generation batch (rows in TRL's shuffled order) -> the recorder,
        and the method's advantages written into inputs before TRL reads them (the sanctioned route for
        per-token advantages, as TRL's own MiniLLM trainer does)."""
        generation, self._lld_handoff.awaiting_loss = self._lld_handoff.awaiting_loss, None
        rows = inputs["lld_row"].cpu()
        if not torch.equal(rows.sort().values, torch.arange(generation.size)):
            raise RuntimeError(f"the loss forward holds {len(rows)} of the generation batch's {generation.size} "
                               f"rows: old-policy scores from it need the whole batch in one micro-batch; set "
                               f"probe_reuse_training_forward=False")
        order = rows.argsort()           # shuffled position of each generation-order row
        width = generation.batch.tokens.shape[1]
        if completion_width < width:
            raise RuntimeError(f"TRL scored {completion_width} completion positions, the batch has {width}")
        with full_output_embedding(self._lld_model()) as unembed:
            probed = self.recorder.score_old_policy(generation, logps[order][:, :width], entropies[order][:, :width],
                                                    hidden[order][:, :width], unembed,
                                                    logit_transform_of(self._lld_model()))
        advantages = pad_advantages(probed.loss_advantages, completion_width).to(inputs["advantages"].device)
        inputs["advantages"] = advantages[rows.to(advantages.device)]

    # --- the callback's work -------------------------------------------------------------------------
    def _lld_after_step(self) -> None:
        """After an optimizer step: the record of every generation batch TRL is now done with (usually none or
        one; several when generations fall inside one optimizer step), its metrics into TRL's (so report_to sees
        them), the progress bar."""
        finished = self._lld_handoff.take_finished(self._step)
        if not finished:
            return
        record = self.recorder.finish_step(self._lld_model(), eval_accuracy=self.eval_accuracy,
                                           step=self.state.global_step, batches=finished)
        for name, value in record.metrics.items():
            self._metrics["train"][name].append(value)
        self._show_progress(float(record.probed.generation.rewards.mean()), record.metrics.get("lld/rate", float("nan")))

    def _show_progress(self, reward: float, lld_rate: float) -> None:
        """reward and LLD rate of the step on TRL's progress bar."""
        from transformers.trainer_callback import ProgressCallback
        for callback in self.callback_handler.callbacks:
            bar = getattr(callback, "training_bar", None) if isinstance(callback, ProgressCallback) else None
            if bar is not None:
                bar.set_postfix(reward=f"{reward:.2f}", lld_rate=f"{lld_rate:.2f}", refresh=False)

    def eval_accuracy(self) -> float:
        """Greedy accuracy on the held-out questions (the paper's evaluation protocol)."""
        width = self.probe_settings.eval_max_new_tokens or self.args.max_completion_length
        return greedy_accuracy(self._lld_model(), self.processing_class, self._eval_questions, self._eval_task,
                               max_new_tokens=width)

    def _lld_meta(self) -> dict:
        settings = self.probe_settings
        windows = run_windows(self.args.steps_per_generation, self.num_iterations,
                              self.args.gradient_accumulation_steps)
        return {**provenance(), "method": settings.method, "probe": asdict(settings),
                "nthr_beta": settings.nthr_beta, "nthr_eta": settings.nthr_eta, "nthr_vocab": settings.nthr_vocab,
                "nthr_anchor_self": settings.nthr_anchor_self, "group_size": self.num_generations,
                "temperature": self.temperature, "seed": self.args.seed, "learning_rate": self.args.learning_rate,
                "loss_type": self.loss_type, "kl_beta": self.beta, "epsilon_low": self.epsilon_low,
                "epsilon_high": self.epsilon_high, "max_completion_length": self.args.max_completion_length,
                "scale_rewards": self.scale_rewards, "old_policy_source": self.old_policy_source,
                "old_policy_source_reason": self.old_policy_source_reason,
                # the probes' forwards run outside autocast (lld_probe.scoring.precision): float32 unless the
                # weights themselves are low precision
                "probe_precision": probe_precision(self._lld_model()),
                # low-precision weights (DeepSpeed's bf16, FSDP2 mixed precision) are what training computes with
                "training_precision": (probe_precision(self._lld_model()) if low_precision_weights(self._lld_model())
                                       else f"{'bf16' if self.args.bf16 else 'fp16'} autocast"
                                       if self.args.bf16 or self.args.fp16 else probe_precision(self._lld_model())),
                "model": getattr(self._lld_model().config, "_name_or_path", None) or type(self._lld_model()).__name__,
                "task": _dataset_description(self.train_dataset),
                # logp_after is measured once per generation batch, after all the optimizer steps that use it;
                # each response's window_steps says how many; the one number here only when every batch's is alike
                **({"delta_spans_optimizer_steps": windows.pop()} if len(windows) == 1 else {}),
                "correct_reward": settings.correct_reward, "correct_threshold": settings.correct_threshold,
                "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **settings.extra_meta}

    def _lld_train_begin(self) -> None:
        # the model is prepared (sharded) by now: a sharded one scores in lockstep across processes
        sharding = refuse_unsupported_sharding(self.model_wrapped)
        self.recorder.sharded = sharding in ("fsdp2", "zero3")
        step = self.state.global_step
        self.recorder.begin_run({**self._lld_meta(), "sharding": sharding or "none"}, resumed_step=step)
        if step == 0 and self.probe_settings.eval_every:
            self.recorder.log_scalars(0, {"eval/accuracy": self.eval_accuracy()})


class _ProbeCallback(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._lld_train_begin()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._lld_after_step()      # records the generation batches TRL is done with, if any

    def on_train_end(self, args, state, control, **kwargs):
        unfinished = len(self.trainer._lld_handoff.batch_ends)
        if unfinished:
            warnings.warn(f"training stopped inside the micro-steps of {unfinished} generation batch(es) "
                          f"(max_steps * gradient_accumulation_steps is not a multiple of steps_per_generation * "
                          f"num_iterations): they are not recorded in the run store")
