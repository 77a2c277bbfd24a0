"""Scoring a group with a model: the batch layout, packed forwards, hidden-state capture."""

from .batch import GroupBatch, build_group_batch
from .hidden import capture_backbone_hidden, capture_final_hidden, output_embedding_weight
from .logit_transform import logit_transform_of
from .scoring import ScoredGroup, forward_logps, score_group

__all__ = ["GroupBatch", "ScoredGroup", "build_group_batch", "capture_backbone_hidden", "capture_final_hidden", "forward_logps",
           "logit_transform_of", "output_embedding_weight", "score_group"]
