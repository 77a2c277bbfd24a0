"""The probes on one data-parallel rank of verl's engine: what the worker extension runs on every process.

Before the update, `score_old_policy` runs the engine's own `infer_batch` on this rank's rows with the hidden
states captured (capture.py), gathers the output embedding, and hands the log-probs, entropy and hidden
states to the recorder (`begin_batch`, `score_old_policy`): NTHR scores and selection, and the method's
advantages in verl's token layout. After the update, `finish_step` re-scores the same rows through the same
`infer_batch` (every rank runs the same forwards, so the sharded model's collectives match) and has the
recorder write this rank's shard of the run store and compute the step's metrics over all ranks.

The rows of a call must be whole groups laid out as consecutive rows across ranks (the driver's step,
step.py, arranges that): rank r holds rows [r * B_local, (r + 1) * B_local) of the generation batch.
"""

from __future__ import annotations

import hashlib
import json

import torch

from ...probes import ProbeRecorder, ProbeSettings, communicator_for
from ...scoring.logit_transform import logit_transform_of
from .capture import HIDDEN_KEY, HiddenStateCapture, full_output_embedding
from .layout import response_values, sequence_advantages, to_response_width, token_lists
from .settings import VERL_RESUME_ADVICE

# what the driver adds to the batch for the probes: lld_reward per row; per call the step, the group size and
# every rank's rewards (as JSON text: verl's dispatch would split a list along the rows)
STEP_KEY, GROUP_SIZE_KEY, ALL_REWARDS_KEY, REWARD_KEY = "lld_step", "lld_group_size", "lld_all_rewards", "lld_reward"
# per call: the optimizer steps verl's update takes on the batch (optimizer_steps.py), the store's window_steps
WINDOW_STEPS_KEY = "lld_window_steps"
ADVANTAGES_KEY = "lld_advantages"


def encode_rewards(rewards: torch.Tensor) -> str:
    """Every rank's rewards, in the form that reaches every rank whole."""
    return json.dumps([float(r) for r in rewards.flatten()])


def question_id(prompt_ids) -> str:
    """A question's id from its prompt tokens (verl batches carry no stable question id)."""
    return "prompt-" + hashlib.sha256(str(list(prompt_ids)).encode()).hexdigest()[:12]


class EngineProbes:
    """worker: verl's TrainingWorker of the actor (its engine and infer_batch)."""

    def __init__(self, worker, settings: ProbeSettings, store_dir, *, temperature: float, tokenizer=None,
                 pad_id: int = 0):
        self.worker = worker
        self.capture = HiddenStateCapture(worker.engine)
        self.tokenizer = tokenizer
        world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        data_parallel = worker.engine.get_data_parallel_size()
        if data_parallel != world_size:
            raise ValueError(f"the actor's data-parallel size {data_parallel} differs from the world size "
                             f"{world_size} (model or sequence parallelism): not supported by the probes")
        self.recorder = ProbeRecorder(settings, store_dir, temperature=temperature, pad_id=pad_id,
                                      comm=communicator_for(world_size, "cpu"))
        self._rows = None            # this rank's rows of the pending batch, for the re-scoring after the update

    def begin_run(self, meta: dict, *, resumed_step: int = 0) -> None:
        """resumed_step: verl's global step of the checkpoint the run resumed from (0: a new run); the store's
        steps after it are dropped and written again."""
        self.recorder.begin_run(meta, resumed_step=resumed_step, resume_advice=VERL_RESUME_ADVICE)

    def _infer(self, data, *, hidden: bool, entropy: bool):
        from verl.utils import tensordict_utils as tu
        data = data.copy()
        tu.assign_non_tensor(data, calculate_entropy=entropy, compute_loss=False)
        self.capture.active = hidden
        try:
            return self.worker.infer_batch(data)
        finally:
            self.capture.active = False

    def score_old_policy(self, data):
        """This rank's rows (verl's no-padding TensorDict: prompts, responses, attention_mask, response_mask,
        input_ids, position_ids, advantages, lld_reward; and lld_step, lld_group_size, lld_all_rewards for the
        call: see encode_rewards; lld_window_steps, default 1) at the old policy -> a TensorDict with the
        method's advantages [B, R] (lld_advantages)."""
        from tensordict import TensorDict
        from verl.utils import tensordict_utils as tu
        prompt_ids, completion_ids = token_lists(data["prompts"], data["responses"], data["attention_mask"],
                                                 data["response_mask"])
        output = self._infer(data, hidden=True, entropy=True)
        unembed = full_output_embedding(self.worker.engine.module)
        prompt_lengths = [len(p) for p in prompt_ids]
        lengths = [len(c) for c in completion_ids]
        width = max(1, max(lengths))
        parts = {key: response_values(output[key].values(), output[key].offsets(), prompt_lengths, lengths, width)
                 for key in ("log_probs", "entropy", HIDDEN_KEY)}
        generation = self.recorder.begin_batch(
            int(tu.get(data, STEP_KEY)), prompt_ids, completion_ids, rewards=data[REWARD_KEY].float().cpu(),
            deciding_rewards=torch.tensor(json.loads(tu.get(data, ALL_REWARDS_KEY)), dtype=torch.float32),
            advantages=sequence_advantages(data["advantages"], data["response_mask"]),
            group_size=int(tu.get(data, GROUP_SIZE_KEY)), prompts=self._texts(prompt_ids),
            completions=self._texts(completion_ids), question_ids=[question_id(p) for p in prompt_ids])
        probed = self.recorder.score_old_policy(generation, parts["log_probs"], parts["entropy"], parts[HIDDEN_KEY],
                                                unembed, logit_transform_of(self.worker.engine.module))
        self._rows = (data, prompt_lengths, lengths, width, int(tu.get(data, WINDOW_STEPS_KEY, 1)))
        advantages = to_response_width(probed.loss_advantages, data["response_mask"])
        return TensorDict({ADVANTAGES_KEY: advantages}, batch_size=[advantages.shape[0]])

    def finish_step(self, scalars: dict | None = None) -> dict:
        """After update_actor: logp_after of the pending rows through the engine, the store's rows, the metrics
        (the same on every rank); scalars (the trainer's metrics of the step) go to the store's scalars."""
        if self._rows is None:
            raise RuntimeError("finish_step without a pending batch: score_old_policy was not called this step")
        data, prompt_lengths, lengths, width, window_steps = self._rows
        self._rows = None
        output = self._infer(data, hidden=False, entropy=False)
        logps = response_values(output["log_probs"].values(), output["log_probs"].offsets(), prompt_lengths,
                                lengths, width)
        step = self.recorder.pending.generation.step
        record = self.recorder.finish_step(None, token_logps_after=logps, window_steps=window_steps)
        self.recorder.store.append_scalars(step, {**(scalars or {}), **record.metrics})
        return dict(record.metrics)

    def step_rows(self) -> dict:
        """This rank's rows of the last finished step, in order: {"logp_before": [...], "logp_after": [...]}
        (summed log-likelihoods, the store's values; NaN where not measured)."""
        responses = self.recorder.last.responses
        return {key: responses[key].astype(float).tolist() for key in ("logp_before", "logp_after")}

    def _texts(self, token_ids) -> list[str]:
        if self.tokenizer is None:
            return [" ".join(map(str, ids)) for ids in token_ids]
        return self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)
