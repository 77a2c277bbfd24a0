"""The `lld` block of a verl run's Hydra config -> the recorder's settings, and the verl settings the probes
refuse, each checked before training starts (no verl import here).

    +lld.method=nthr +lld.nthr_beta=1 +lld.store_dir=/shared/runs/lld
"""

from __future__ import annotations

import math
from dataclasses import fields

from ...probes import ProbeSettings

# the ProbeSettings fields a verl run may set under `lld`; the probe set and greedy evaluation need a model
# outside verl's sharded engine and are not offered
ALLOWED = ("method", "nthr_beta", "nthr_eta", "nthr_vocab", "nthr_anchor_self", "seed", "probe_response_fraction",
           "probe_token_rows", "correct_threshold")
EXTRA = ("store_dir", "probes")       # probes=false: no probes, only the rollout token dump (TokenDumpRayPPOTrainer)
# how a verl run gets another store or continues this one (the error for a store folder already in use)
VERL_RESUME_ADVICE = ("give another lld.store_dir (default <trainer.default_local_dir>/lld_store), or resume the "
                      "run from its checkpoint (trainer.resume_mode=auto or resume_path, checkpoints from "
                      "trainer.save_freq)")


def _plain(block) -> dict:
    """A DictConfig or a mapping -> a plain dict."""
    if block is None:
        return {}
    try:
        from omegaconf import OmegaConf
        if OmegaConf.is_config(block):
            return dict(OmegaConf.to_container(block, resolve=True))
    except ImportError:
        pass
    return dict(block)


def probe_settings_from_config(lld, *, seed: int = 0) -> tuple[ProbeSettings, str | None]:
    """(the recorder's settings, the run store's folder or None) from the `lld` block; an unknown or unsupported
    key raises a ValueError naming it."""
    values = _plain(lld)
    known = {f.name for f in fields(ProbeSettings)}
    for key in values:
        if key not in ALLOWED and key not in EXTRA:
            hint = (" (the probe set and greedy evaluation are not available on verl)" if key in known else "")
            raise ValueError(f"lld.{key} is not a setting of the verl probes{hint}; known: {', '.join(ALLOWED + EXTRA)}")
    store_dir = values.pop("store_dir", None)
    values.pop("probes", None)
    beta = float(values.get("nthr_beta", 1.0))
    if math.isnan(beta) or beta == math.inf:
        raise ValueError(f"lld.nthr_beta must be a finite number or -inf, got {beta}")
    values.setdefault("seed", seed)
    return ProbeSettings(probe_set_size=0, eval_every=0, **values), store_dir


def probes_enabled(lld) -> bool:
    """False when the `lld` block says probes=false (a run with the rollout token dump only)."""
    value = _plain(lld).get("probes", True)
    if not isinstance(value, bool):
        raise ValueError(f"lld.probes must be true or false, got {value!r}")
    return value


def _getter(config):
    def get(path, default=None):
        node = config
        for part in path.split("."):
            node = node.get(part, None) if hasattr(node, "get") else None
            if node is None:
                return default
        return node
    return get


def check_dump_config(config) -> None:
    """verl settings the rollout token dump without the probes cannot follow, refused before the workers start."""
    get = _getter(config)
    if get("trainer.use_v1", False):
        raise ValueError("trainer.use_v1=true: the token dump runs on verl's RayPPOTrainer; set trainer.use_v1=false")
    if get("actor_rollout_ref.rollout.multi_turn.enable", False):
        raise ValueError("actor_rollout_ref.rollout.multi_turn.enable=true: the token dump supports single-turn "
                         "responses only")


# verl's advantage estimators whose advantages vary along a response: a critic's values, per-token baselines
TOKEN_LEVEL_ESTIMATORS = ("gae", "optimal_token_baseline", "tir_optimal_token_baseline")
# estimators that sum the token rewards from each token to the end: one value per response only while the
# reward sits on the last token alone (no KL penalty in the reward) and is not discounted
RETURN_ESTIMATORS = ("reinforce_plus_plus", "remax")


def check_outcome_advantages(config) -> None:
    """The probes need one advantage per response (an outcome estimator such as grpo or rloo); the estimators
    and settings known to vary it within a response are refused here, before training (the first update checks
    the advantages themselves, for estimators registered elsewhere)."""
    get = _getter(config)
    estimator = get("algorithm.adv_estimator")
    if estimator is None:
        return
    estimator = str(getattr(estimator, "value", estimator))
    if estimator in TOKEN_LEVEL_ESTIMATORS:
        raise ValueError(f"algorithm.adv_estimator={estimator}: its advantages vary within a response; the probes "
                         f"need one per response (an outcome estimator such as grpo or rloo)")
    if estimator in RETURN_ESTIMATORS and get("algorithm.use_kl_in_reward", False):
        raise ValueError(f"algorithm.use_kl_in_reward=true with adv_estimator={estimator}: the KL penalty on every "
                         f"token makes the returns vary within a response; set it to false (or use the actor's "
                         f"use_kl_loss)")
    if estimator == "reinforce_plus_plus" and float(get("algorithm.gamma", 1.0)) != 1.0:
        raise ValueError(f"algorithm.gamma={get('algorithm.gamma')} with adv_estimator=reinforce_plus_plus: "
                         f"discounted returns vary within a response; set it to 1.0")


def check_group_size(config) -> None:
    """verl samples actor_rollout_ref.rollout.n responses per prompt, one group; the probes compare a group's
    responses (NTHR's correct ones, the group baselines of the advantages)."""
    size = _getter(config)("actor_rollout_ref.rollout.n")
    if size is not None and int(size) < 2:
        raise ValueError(f"actor_rollout_ref.rollout.n={size}: the probes need groups of at least 2 responses per "
                         f"prompt; set it to 2 or more")


def check_verl_config(config) -> None:
    """verl settings the probes cannot follow, refused before the workers start (config: verl's whole config)."""
    get = _getter(config)
    if get("trainer.use_v1", False):
        raise ValueError("trainer.use_v1=true: the probes run on verl's RayPPOTrainer; set trainer.use_v1=false")
    for key in ("actor_rollout_ref.actor.ulysses_sequence_parallel_size",
                "actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size"):
        if int(get(key, 1) or 1) > 1:
            raise ValueError(f"{key} > 1 splits sequences across processes: the probes need whole hidden states; "
                             f"set it to 1")
    if get("actor_rollout_ref.actor.strategy", "fsdp") not in ("fsdp", "fsdp2"):
        raise ValueError(f"actor_rollout_ref.actor.strategy={get('actor_rollout_ref.actor.strategy')}: the probes "
                         f"support verl's FSDP engine (fsdp, fsdp2)")
    if get("actor_rollout_ref.rollout.multi_turn.enable", False):
        raise ValueError("actor_rollout_ref.rollout.multi_turn.enable=true: the probes support single-turn responses")
    if get("algorithm.rollout_correction.bypass_mode", False):
        raise ValueError("algorithm.rollout_correction.bypass_mode=true: the old policy is then the rollout's, which "
                         "the probes cannot score; set it to false")
    check_outcome_advantages(config)
    check_group_size(config)
