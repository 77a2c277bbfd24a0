"""The optimizer steps verl takes on one generation batch (no verl import).

verl 0.9.1's RayPPOTrainer._update_actor hands the batch to the actor's train_mini_batch with mini-batches of
actor.ppo_mini_batch_size prompts x rollout.n responses and actor.ppo_epochs epochs; train_mini_batch runs
one train_batch, one optimizer step, per mini-batch of each epoch. A verl global step therefore spans
ppo_epochs x (the batch's responses / the mini-batch's) optimizer steps, the window_steps of the run store.
"""

from __future__ import annotations


def optimizer_steps_per_batch(responses: int, *, mini_batch_prompts: int, group_size: int, epochs: int) -> int:
    """Optimizer steps of verl's update on a batch of `responses` rows (ppo_mini_batch_size=mini_batch_prompts,
    rollout.n=group_size, ppo_epochs=epochs)."""
    mini_batch = int(mini_batch_prompts) * int(group_size)
    if mini_batch < 1 or int(epochs) < 1:
        raise ValueError(f"actor_rollout_ref.actor.ppo_mini_batch_size={mini_batch_prompts} and "
                         f"ppo_epochs={epochs} must be positive")
    if responses % mini_batch:
        raise ValueError(f"a batch of {responses} responses is not whole mini-batches of "
                         f"actor_rollout_ref.actor.ppo_mini_batch_size={mini_batch_prompts} x rollout.n={group_size}")
    return responses // mini_batch * int(epochs)


def optimizer_steps_of_config(config, responses: int | None = None) -> int:
    """The same from verl's whole config, for a batch of `responses` rows (default: data.train_batch_size
    prompts' groups, what meta.json records)."""
    actor, rollout = config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout
    if responses is None:
        responses = int(config.data.train_batch_size) * int(rollout.n)
    return optimizer_steps_per_batch(responses, mini_batch_prompts=int(actor.ppo_mini_batch_size),
                                     group_size=int(rollout.n), epochs=int(actor.ppo_epochs))
