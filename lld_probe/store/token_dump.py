"""The token dump's per-response columns (store.schema.TOKEN_DUMP_COLUMNS), built in one place for every
framework's writer (TRL: integrations/trl/token_dump.py; verl: integrations/verl/rollout_dump.py)."""

from __future__ import annotations

from .schema import TOKEN_DUMP_COLUMNS


def _floats(values) -> list[float]:
    return [float(v) for v in values]


def dump_columns(*, prompt_ids, completion_ids, advantage, uid=None, sampler_logps=None, old_policy_logps=None,
                 logp_before=None, logp_after=None) -> dict[str, list]:
    """{column: one value per response} for every column of TOKEN_DUMP_COLUMNS, in its order; a column given as
    None (not recorded by this run) holds None for every response. Token ids become lists of ints, per-token
    log-probs lists of floats (one per completion token)."""
    count = len(completion_ids)
    columns = {
        "uid": None if uid is None else [str(u) for u in uid],
        "prompt_ids": [[int(t) for t in ids] for ids in prompt_ids],
        "completion_ids": [[int(t) for t in ids] for ids in completion_ids],
        "advantage": _floats(advantage),
        "sampler_logps": None if sampler_logps is None else [None if r is None else _floats(r) for r in sampler_logps],
        "old_policy_logps": None if old_policy_logps is None else [None if r is None else _floats(r)
                                                                   for r in old_policy_logps],
        "logp_before": None if logp_before is None else _floats(logp_before),
        "logp_after": None if logp_after is None else _floats(logp_after),
    }
    columns = {name: [None] * count if values is None else values for name, values in columns.items()}
    for name, values in columns.items():
        if len(values) != count:
            raise ValueError(f"token dump column {name} has {len(values)} values for {count} responses")
    for name in ("sampler_logps", "old_policy_logps"):
        for row, (logps, ids) in enumerate(zip(columns[name], columns["completion_ids"])):
            if logps is not None and len(logps) != len(ids):
                raise ValueError(f"token dump column {name}: response {row} has {len(logps)} log-probs for "
                                 f"{len(ids)} completion tokens")
    return {name: columns[name] for name in TOKEN_DUMP_COLUMNS}
