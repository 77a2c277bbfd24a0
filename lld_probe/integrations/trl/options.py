"""`--trl KEY=VALUE`: any GRPOConfig / LLDConfig field from the command line, typed by transformers'
HfArgumentParser, the parser TRL's own scripts use."""

from __future__ import annotations

import typing
from dataclasses import fields


def parse_trl_options(pairs: list[str]) -> dict:
    """["loss_type=dapo", "reward_weights=1,0.2", ...] -> {field: typed value}; a list field takes a
    comma-separated value. Unknown fields and values of the wrong type raise ValueError naming them."""
    if not pairs:
        return {}
    from transformers import HfArgumentParser

    from .config import LLDConfig
    known = {f.name: f for f in fields(LLDConfig)}
    argv, keys = [], []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--trl {pair!r}: expected KEY=VALUE")
        if key not in known:
            raise ValueError(f"--trl {key}: not a field of GRPOConfig or LLDConfig")
        is_list = "list" in str(known[key].type).lower() or typing.get_origin(known[key].type) is list
        argv += [f"--{key}", *(value.split(",") if is_list else [value])]
        keys.append(key)
    parser = HfArgumentParser(LLDConfig)
    try:
        namespace, _ = parser.parse_known_args(argv)
    except SystemExit as error:       # argparse reports a bad value on stderr and exits
        raise ValueError(f"--trl: a value does not fit its field's type ({' '.join(pairs)})") from error
    return {key: getattr(namespace, key) for key in keys}
