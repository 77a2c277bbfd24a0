"""The TRL internals LikelihoodProbeMixin and LLDGRPOTrainer rely on. When TRL changes them, this
fails first, with a message that says what moved (pyproject pins trl>=1.0,<1.17)."""

from __future__ import annotations

import inspect

import pytest
import trl
from trl import GRPOTrainer

PINNED = {
    "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
    "_generate_and_score_completions": ["self", "inputs"],
    "log": ["self", "logs", "start_time"],
    "_compute_loss": ["self", "model", "inputs"],
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_overridden_trl_methods_keep_their_signature(name):
    method = getattr(GRPOTrainer, name, None)
    assert method is not None, f"TRL {trl.__version__} GRPOTrainer has no {name}: update lld_probe/integrations/trl/adapter.py"
    params = list(inspect.signature(method).parameters)
    assert params == PINNED[name], (f"TRL {trl.__version__} changed GRPOTrainer.{name}{params}; lld_probe expects "
                                    f"{PINNED[name]}: update lld_probe/integrations/trl/adapter.py")


def test_trl_loss_accepts_per_token_advantages():
    source = inspect.getsource(GRPOTrainer._compute_loss)
    assert "advantages.dim() == 1" in source, ("TRL's _compute_loss no longer special-cases [B] advantages; "
                                               "check that [B, T] per-token advantages still work (NTHR needs them)")


def test_repeat_sampler_keeps_groups_consecutive():
    from trl.trainer.utils import RepeatSampler
    indices = list(RepeatSampler(list(range(6)), mini_repeat_count=4, batch_size=3, repeat_count=1, shuffle=False))
    assert indices[:4] == [0, 0, 0, 0] and indices[4:8] == [1, 1, 1, 1], \
        "TRL's RepeatSampler no longer puts a prompt's G samples next to each other; the probes assume it"


def test_loss_scores_the_policy_before_it_reads_the_advantages():
    """The probes take the old policy's scores from the first _get_per_token_logps_and_entropies call of
    _compute_loss and replace inputs["advantages"] there: TRL must read them afterwards."""
    params = list(inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters)
    assert params[:5] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep"], \
        f"TRL {trl.__version__} changed _get_per_token_logps_and_entropies{params}: update lld_probe/integrations/trl/adapter.py"
    source = inspect.getsource(GRPOTrainer._compute_loss)
    scored = source.find("self._get_per_token_logps_and_entropies(")
    read = source.find('inputs["advantages"]')
    assert 0 <= scored < read, (f"TRL {trl.__version__}'s _compute_loss no longer scores the policy before reading "
                                f"the advantages: set reuse_training_forward=False and update lld_probe/integrations/trl/adapter.py")
    forward = inspect.getsource(GRPOTrainer._get_per_token_logps_and_entropies)
    assert "compute_entropy" in forward and "logits_to_keep" in forward


def test_rewards_are_gathered_and_advantages_sliced_per_process():
    """The adapter reads every process's rewards from _calculate_rewards (gathered) and takes this process's
    rows as the contiguous slice process_index * B_local (TRL's process_slice)."""
    rewards = inspect.getsource(GRPOTrainer._calculate_rewards)
    assert "gather(rewards_per_func)" in rewards, \
        f"TRL {trl.__version__}'s _calculate_rewards no longer gathers rewards over processes: update the adapter"
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "process_slice" in source and "self.accelerator.process_index * len(prompts)" in source, \
        f"TRL {trl.__version__} changed how a process's rows are sliced from the generation batch: update the adapter"


def test_trainer_state_the_adapter_reads_exists():
    """The adapter reads GRPOTrainer._step (micro-steps done, to know when a generation batch is finished) and
    appends its metrics to GRPOTrainer._metrics["train"] (so they reach TRL's log and report_to)."""
    init = inspect.getsource(GRPOTrainer.__init__)
    assert "self._step = 0" in init, \
        f"TRL {trl.__version__} no longer counts micro-steps in GRPOTrainer._step: update lld_probe/integrations/trl/adapter.py"
    assert 'self._metrics = {"train": defaultdict(list)' in init, \
        f"TRL {trl.__version__} no longer keeps GRPOTrainer._metrics['train']: update lld_probe/integrations/trl/adapter.py"
    step = inspect.getsource(GRPOTrainer.training_step)
    assert "self._step += 1" in step, \
        f"TRL {trl.__version__}'s training_step no longer advances _step: update lld_probe/integrations/trl/adapter.py"


def test_fsdp1_is_refused_when_the_trainer_is_built():
    """The trainer reads transformers' Trainer.is_fsdp_enabled and accelerate's fsdp_plugin.fsdp_version."""
    from types import SimpleNamespace

    import accelerate
    import transformers

    from lld_probe.integrations.trl.adapter import _refuse_fsdp1
    source = inspect.getsource(transformers.Trainer)
    assert 'self.is_fsdp_enabled = getattr(self.accelerator.state, "fsdp_plugin", None) is not None' in source, \
        f"transformers {transformers.__version__} no longer sets Trainer.is_fsdp_enabled: update _refuse_fsdp1"
    assert "fsdp_version" in inspect.signature(accelerate.FullyShardedDataParallelPlugin).parameters, \
        f"accelerate {accelerate.__version__}'s FSDP plugin has no fsdp_version: update _refuse_fsdp1"

    def trainer(version):
        plugin = None if version is None else SimpleNamespace(fsdp_version=version)
        return SimpleNamespace(is_fsdp_enabled=plugin is not None,
                               accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)))
    with pytest.raises(ValueError, match="FSDP1 .* is not supported by the probes.*fsdp_version: 2"):
        _refuse_fsdp1(trainer(1))
    _refuse_fsdp1(trainer(2))
    _refuse_fsdp1(trainer(None))


def test_every_trl_method_the_mixin_overrides_is_pinned():
    from lld_probe.integrations.trl import LikelihoodProbeMixin
    overridden = {name for name in vars(LikelihoodProbeMixin) if hasattr(GRPOTrainer, name) and not name.startswith("__")}
    pinned = set(PINNED) | {"_get_per_token_logps_and_entropies"}
    assert overridden <= pinned, f"the mixin overrides TRL methods no test pins: {sorted(overridden - pinned)}"


def test_generation_schedule_the_probes_follow():
    """lld_probe/integrations/trl/batch_windows.py: TRL generates when _step is a multiple of generate_every =
    steps_per_generation * num_iterations (or it holds no buffered batch), and feeds the batch's slices in turn."""
    source = inspect.getsource(GRPOTrainer._prepare_inputs)
    for line in ("generate_every = self.args.steps_per_generation * self.num_iterations",
                 "if self._step % generate_every == 0 or self._buffered_inputs is None:",
                 "inputs = self._buffered_inputs[self._step % self.args.steps_per_generation]"):
        assert line in source, (f"TRL {trl.__version__} changed when GRPOTrainer._prepare_inputs generates ({line!r} "
                                f"is gone): update lld_probe/integrations/trl/batch_windows.py")


def test_tool_outputs_are_masked_by_tool_mask_not_completion_mask():
    """Multi-turn tools (tools=, environment_factory, a rollout_func's env_mask) keep completion_mask a prefix
    and mark a tool's output in output["tool_mask"] (0 there), which the loss multiplies into completion_mask:
    the probes read the same key (adapter.measured_flags) to leave those tokens unmeasured."""
    generate = inspect.getsource(GRPOTrainer._generate)
    assert 'extra_fields.pop("env_mask"' in generate, (f"TRL {trl.__version__} no longer turns a rollout_func's env_mask "
                                                       f"into tool_mask: update adapter.measured_flags")
    score = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert 'output["tool_mask"] = tool_mask' in score, (f"TRL {trl.__version__} no longer hands tool_mask on in the "
                                                       f"generation batch: update adapter.measured_flags")
    loss = inspect.getsource(GRPOTrainer._compute_loss)
    assert 'completion_mask * inputs["tool_mask"]' in loss, (f"TRL {trl.__version__}'s loss no longer masks tool "
                                                             f"outputs with tool_mask: update adapter.measured_flags")


def test_trl_advantage_sign_is_the_reward_against_its_group_mean():
    """The probes read correctness of non-binary rewards from reward - group mean (core.correctness): TRL's
    advantage must still be that difference over a positive scale (sum_then_normalize, every scale_rewards)."""
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    for piece in ("advantages = rewards - mean_grouped_rewards", "advantages / (std_rewards + 1e-4)",
                  'self.multi_objective_aggregation == "sum_then_normalize"'):
        assert piece in source, (f"TRL {trl.__version__} changed its advantage ({piece!r} is gone): check that its "
                                 f"sign is still reward - group mean (lld_probe/core/correctness.py, "
                                 f"lld_probe/integrations/trl/advantage_sign.py)")


def test_trl_vllm_fields_keep_their_names_and_masking():
    """lld_probe/integrations/trl/sampler.py reads these output fields; a masked ratio is exactly 0."""
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    for piece in ('output["importance_sampling_ratio"]', 'output["sampling_per_token_logps"]',
                  "invalid_mis_mask, value=0.0", "completion_mask * tool_mask"):
        assert piece in source, (f"TRL {trl.__version__} changed its importance-sampling fields ({piece!r} is "
                                 f"gone): update lld_probe/integrations/trl/sampler.py")
