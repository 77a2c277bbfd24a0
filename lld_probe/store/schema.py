"""The run store's schema: the one place that names its files, columns and identifiers.

    meta.json                                  schema_version, method, settings, model, task, seed, world_size,
                                               versions
    responses/step=NNNNNN[.rank=RRRRR].parquet one row per sampled response
    tokens/step=NNNNNN[.rank=RRRRR].parquet    per-token rows for the responses the probes re-score
    probe_set/step=NNNNNN.parquet              step, probe_id, kind, logp of the fixed probe responses
    scalars/step=NNNNNN.parquet                step, name, value: every metric the trainer logs

A run on N processes writes one shard per rank and step (`.rank=RRRRR`); a 1-process run writes the
plain name. Readers merge the shards of a step; a step is complete when all world_size shards of its
responses exist (see docs/design.md, "The run store").
"""

from __future__ import annotations

import re
from pathlib import Path

# 1: the first stores (no schema_version in meta.json); 2: `selected` -> `scaled`, scalars and probe set in
# per-step files
SCHEMA_VERSION = 2

# scaled: the method multiplied the token's advantage by eta (nthr: NTHR's selection; random: the random
# control's draw); nthr_selected: NTHR's selection, whatever the method (logged by every method).
# step: the optimizer step after which logp_after was measured; window_steps: the optimizer steps its Delta
# spans, from the old policy (logp_before: the parameters the response was generated with, after optimizer step
# step - window_steps) to logp_after. A step's file holds every generation batch that step finished (a batch is
# finished at the first optimizer step after its last use), their groups numbered on from one batch to the next.
# A verl run's step is verl's global step instead (one generation batch each, window_steps optimizer steps apart).
RESPONSE_COLUMNS = ["step", "question_id", "group_id", "response_index", "prompt", "completion", "reward",
                    "correct", "advantage", "n_tokens", "logp_before", "logp_after", "scaled_fraction",
                    "nthr_selected_fraction", "truncated", "sampler_masked", "window_steps", "prompt_ids"]
# truncated: cut at the length limit and masked out of the loss; sampler_masked: taken out of the update by the
# trainer's importance-sampling correction of another engine's samples (TRL's vLLM *_mask modes, ratio 0 on every
# token). Either leaves the response without measured tokens: in no LLD statistic.
# n_tokens: the response's measured tokens (those its logp sums), the completion's tokens less any tool or
# environment output inside it. prompt_ids: the prompt's token ids as scored (no padding); `prompt` is its text
# for reading (a conversation's printed form): a re-scoring takes the ids. Stores written before this column
# have none (a reader fills None; lld_probe.rescore then rebuilds the prompt from its text and verifies it).
# token rows: every completion token of a re-scored response; measured False marks a token in the sequence as
# context only (a tool's or environment's output, TRL's tool_mask / env_mask 0): outside logp_before/logp_after,
# NTHR's M+, anchors, tau and selection, the random control and every metric; its logp_before, logp_after,
# nthr_score and entropy are NaN. Stores written before this column measured every token (a reader fills True).
TOKEN_COLUMNS = ["step", "group_id", "response_index", "token_id", "position", "logp_before", "logp_after",
                 "nthr_score", "scaled", "nthr_selected", "entropy", "measured"]
PROBE_SET_COLUMNS = ["step", "probe_id", "kind", "question_id", "n_tokens", "logp"]
SCALAR_COLUMNS = ["step", "name", "value"]
# columns older stores may lack (a reader fills them with NaN / False)
OPTIONAL_RESPONSE_COLUMNS = {"nthr_selected_fraction": float("nan"), "truncated": False, "sampler_masked": False,
                             "prompt_ids": None}
OPTIONAL_TOKEN_COLUMNS = {"nthr_selected": False, "measured": True}
# columns of schema version 1 under their current names (a reader renames them)
RENAMED_COLUMNS = {"selected": "scaled", "selected_fraction": "scaled_fraction"}
# columns of a store re-scored from checkpoints (lld_probe.rescore; docs/rescore.md), all but window_steps in no
# probed run's store:
#   window_steps       optimizer steps between the two checkpoints that give logp_before and logp_after
#   checkpoint_before  the optimizer step of the checkpoint that gave logp_before (0: the initial model)
#   checkpoint_after   the optimizer step of the checkpoint that gave logp_after
#   tokenization       "ids": the sampled token ids (logged); "text": re-tokenised from the logged text
#   roundtrip_ok       False: the re-tokenised completion does not decode back to its text (left unmeasured)
#   prompt_ok          False: the prompt had no logged token ids and its rebuilt tokens could not be verified
#                      against the logged prompt (lld_probe.rescore.prompts; left unmeasured)
RESCORE_RESPONSE_COLUMNS = ["window_steps", "checkpoint_before", "checkpoint_after", "tokenization", "roundtrip_ok",
                            "prompt_ok"]
TOKEN_DUMP_DIR = "lld_tokens"        # the token dump a trainer without probes writes into its output_dir (step files)
# the token dump: per sampled response what a run without the probes needs for an exact re-scoring, written by
# TRL runs (integrations/trl/token_dump.py: Parquet step files in TOKEN_DUMP_DIR, with step, row, prompt,
# completion, truncated, reward columns) and verl runs (integrations/verl/rollout_dump.py: keys of verl's own
# rollout dump rows, {step}.jsonl in trainer.rollout_data_dir); built by store.token_dump.dump_columns only:
#   uid               the framework's group id (verl's uid; absent for TRL, whose groups are consecutive rows)
#   prompt_ids        the prompt's token ids (no padding)
#   completion_ids    the completion's measured token ids (what the loss scored)
#   advantage         the trainer's advantage of the response (before any method of the probes changed it)
#   sampler_logps     the sampler's per-token log-probs (vLLM's; verl's rollout_log_probs), where returned
#   old_policy_logps  the old policy's per-token log-probs (TRL's old_per_token_logps, verl's old_log_probs)
#   logp_before       the probes' summed log-likelihood at the old policy (RESPONSE_COLUMNS'), probed runs only
#   logp_after        the same after the update (NaN where the probes did not re-score the response)
TOKEN_DUMP_COLUMNS = ["uid", "prompt_ids", "completion_ids", "advantage", "sampler_logps", "old_policy_logps",
                      "logp_before", "logp_after"]
TOKEN_TEXT_COLUMN = "token"          # a re-scored store's token rows also hold each token's text
# what a reader fills in for a probed run's store (exact token ids, no checkpoints; stores written before
# window_steps was a response column: NaN windows, see meta.json's delta_spans_optimizer_steps)
OPTIONAL_RESPONSE_COLUMNS.update({"window_steps": float("nan"), "checkpoint_before": float("nan"),
                                  "checkpoint_after": float("nan"), "tokenization": "ids", "roundtrip_ok": True,
                                  "prompt_ok": True})

STEP_FILE = re.compile(r"^step=(\d{6,})(?:\.rank=(\d{5}))?\.parquet$")


def group_id(step: int, group_index: int) -> str:
    """The id of the group_index-th group (one prompt's G responses) of a step: "STEP:INDEX"."""
    return f"{int(step)}:{int(group_index)}"


def protocol_group_id(question_id, method: str) -> str:
    """The id of a protocol group: one question's sampled group under one method's update, "QUESTION|METHOD"."""
    return f"{question_id}|{method}"


def step_path(folder, step: int, rank: int | None = None) -> Path:
    """The file of one step (and, in a multi-process run, one rank's shard of it)."""
    shard = "" if rank is None else f".rank={int(rank):05d}"
    return Path(folder) / f"step={int(step):06d}{shard}.parquet"


def parse_step_file(name: str) -> tuple[int, int | None] | None:
    """(step, rank or None) of a step file's name; None for any other file."""
    match = STEP_FILE.match(name)
    if not match:
        return None
    return int(match.group(1)), (None if match.group(2) is None else int(match.group(2)))

# a protocol folder: protocol.parquet (one row per question and method), responses.parquet, tokens.parquet,
# questions.parquet (one row per sampled question; `mixed`: kept for the experiment) and meta.json
PROTOCOL_TABLES = ("protocol", "responses", "tokens", "questions")
# columns of older protocol folders under their current names (a reader renames them): `variant` was the
# column of the method (grpo, pos_only, random, nthr) in protocol, responses and step_context tables
PROTOCOL_RENAMED_COLUMNS = {"kept": "mixed", "selected": "nthr_selected", "selected_fraction": "scaled_fraction",
                            "variant": "method"}
