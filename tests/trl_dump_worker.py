"""One process of a plain TRL GRPOTrainer run with the token dump (tests/test_token_dump_processes.py runs it
under torchrun): python trl_dump_worker.py OUT."""

from __future__ import annotations

import sys

from helpers import train_settings
from lld_probe.integrations.trl import add_token_dump
from lld_probe.integrations.trl.run import make_trainer


def main(out: str) -> None:
    settings = train_settings(out=out, method="grpo", steps=2, prompts_per_step=3, group_size=4, eval_every=0,
                              probe_set_size=0, progress=False, probes=False, save_steps=1,
                              extra={"log_completions": True})
    trainer, _ = make_trainer(settings)
    add_token_dump(trainer)
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1])
