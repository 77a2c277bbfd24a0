"""Pure torch math of lld_probe: no transformers, no I/O. Every function validates its arguments
and raises ValueError naming the one that does not fit."""

from .advantages import (eta_for_group, group_advantages, parse_eta, pos_only, random_matched_selection,
                         success_rate, token_advantages)
from .ches import ches
from .correctness import (ADVANTAGE_SIGN_RULE, BINARY_RULE, DEFAULT_RULE, THRESHOLD_RULE, above_group_mean, batch_rule,
                          configured_rule, correct_from_rewards, rewards_are_binary)
from .gwhes import gwhes, preference_weights
from .interaction import interaction_scores
from .lld import is_lazy, lld_count, lld_rate
from .logprobs import align_next_token, sequence_logprob, token_entropy, token_logprobs
from .methods import METHODS, SEQUENCE_LEVEL, check_methods, method_token_advantages, sequence_advantages
from .nthr import NTHRScores, nthr_select, nthr_threshold, nthr_token_scores, response_anchors, select_above
from .nthr_parts import positive_aggregate, scores_from_aggregate
from .nthr_settings import NTHRSettings, setting
from .prediction import first_order_logp_change

__all__ = [
    "NTHRScores", "NTHRSettings", "SEQUENCE_LEVEL", "setting", "METHODS", "check_methods", "correct_from_rewards", "is_lazy", "lld_count", "lld_rate", "sequence_advantages",
    "rewards_are_binary", "ADVANTAGE_SIGN_RULE", "BINARY_RULE", "DEFAULT_RULE", "THRESHOLD_RULE", "above_group_mean",
    "batch_rule", "configured_rule", "method_token_advantages", "align_next_token", "ches", "eta_for_group", "first_order_logp_change",
    "group_advantages", "gwhes", "interaction_scores", "nthr_select", "nthr_threshold",
    "nthr_token_scores", "parse_eta", "positive_aggregate", "scores_from_aggregate", "response_anchors", "select_above", "pos_only", "preference_weights", "random_matched_selection",
    "sequence_logprob", "success_rate", "token_advantages", "token_entropy", "token_logprobs",
]
