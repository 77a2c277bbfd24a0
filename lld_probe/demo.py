"""`lld-probe demo`: the main job.
1. the per-question LLD protocol on the testbed (the "chain" model on multi-step arithmetic chains,
   where correct and incorrect solutions share most of their text), under the default optimizer and
   under the other one: the questions whose correct responses lose likelihood under GRPO, and what
   Pos Only, Random and NTHR do to them;
2. the same protocol on SmolLM2-135M-Instruct (full demo only);
3. a short GRPO vs NTHR training comparison with the likelihood probes (SmolLM2; the tiny model with --quick);
4. one report (summary.md + figures) over all of it, the testbed first.

Everything runs in float32, on every machine: a bf16 copy (for sampling or for the update) would change the
sampled responses and the updates, so the demo's numbers would depend on whether the CPU has bf16
instructions. The same command gives the same numbers everywhere (docs/precision.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

ALL_METHODS = ["grpo", "pos_only", "random", "nthr"]

# the testbed's protocol: default optimizer first, then the other one for the side by side
# (sampling at temperature 0.7, as the paper samples DeepSeek-R1-Distill at 0.6: more groups with a high
# success rate and more text shared between correct and incorrect responses)
TESTBED = {"model": "chain", "task": "chain", "questions": 40, "mixed": 24, "temperature": 0.7,
           "optimizers": [("adamw", 1e-4), ("sgd", 1e-3)]}

@dataclass(frozen=True)
class DemoConfig:
    """What one flavour of the demo runs after the testbed's protocols."""
    model: str                    # the model of the training comparison (and of the second protocol)
    questions: int                # protocol questions on that model
    train_steps: int
    prompts_per_step: int
    eval_every: int
    eval_questions: int | None    # None: every held-out question
    model_protocol: bool          # also run the protocol on `model`


# sized to the time budgets on a 2-core CPU: <= 15 min (FULL), <= 2 min (QUICK)
FULL = DemoConfig(model="smollm2", questions=16, train_steps=4, prompts_per_step=2, eval_every=4, eval_questions=8,
                  model_protocol=True)
QUICK = DemoConfig(model="tiny", questions=24, train_steps=12, prompts_per_step=4, eval_every=4, eval_questions=None,
                   model_protocol=False)


def _stage(start: float, text: str) -> None:
    print(f"[{time.time() - start:6.0f} s] {text}", flush=True)


def _protocol(config, folder: Path, start: float, model=None, tokenizer=None) -> bool:
    """Run and save one protocol with its report; True when it kept a mixed group."""
    from .analysis.protocol_report import write_protocol_report
    from .protocol import run_protocol, save_protocol
    result = run_protocol(config, model=model, tokenizer=tokenizer)
    save_protocol(result, folder)
    mixed = int(result.questions["mixed"].sum())
    _stage(start, f"kept {mixed} of {len(result.questions)} questions with mixed groups")
    if mixed:
        write_protocol_report(folder)
    return bool(mixed)


def run_demo(*, quick: bool = False, out: Path) -> Path:
    from .analysis.report import write_report
    from .models import load_model
    from .integrations.trl.run import TrainSettings, run_training
    from .probes import ProbeSettings
    from .protocol import ProtocolConfig

    demo = QUICK if quick else FULL
    out = Path(out)
    start = time.time()
    _stage(start, f"lld-probe demo (float32 throughout); results in {out}")
    runs = []
    model, tokenizer = load_model(TESTBED["model"])
    for optimizer, lr in TESTBED["optimizers"]:
        _stage(start, f"1/4 LLD protocol on the testbed ({TESTBED['model']!r} on {TESTBED['task']!r}, temperature "
                      f"{TESTBED['temperature']}, one {optimizer} step, lr {lr:g}), methods {ALL_METHODS}")
        config = ProtocolConfig(model=TESTBED["model"], task=TESTBED["task"], questions=TESTBED["questions"],
                                mixed=TESTBED["mixed"], temperature=TESTBED["temperature"], methods=ALL_METHODS,
                                optimizer=optimizer, lr=lr, fresh_samples=0)
        folder = out / f"protocol-testbed-{optimizer}"
        if _protocol(config, folder, start, model, tokenizer):
            runs.append(folder)
    del model, tokenizer
    if demo.model_protocol:
        _stage(start, f"2/4 LLD protocol on {demo.model!r}, {demo.questions} questions")
        config = ProtocolConfig(model=demo.model, questions=demo.questions, methods=ALL_METHODS,
                                fresh_samples=0)
        if _protocol(config, out / "protocol", start):
            runs.append(out / "protocol")
    for method in ("grpo", "nthr"):
        _stage(start, f"3/4 training {method} on {demo.model!r}: {demo.train_steps} steps x "
                      f"{demo.prompts_per_step} prompts x G=8")
        run_dir = out / "train" / f"{method}-seed0"
        run_training(TrainSettings(out=str(run_dir), model=demo.model, steps=demo.train_steps,
                                   prompts_per_step=demo.prompts_per_step, eval_questions=demo.eval_questions,
                                   probe=ProbeSettings(method=method, eval_every=demo.eval_every, probe_every=2)))
        runs.append(run_dir)
    _stage(start, "4/4 report and figures")
    summary = write_report(runs, out / "report")
    _stage(start, f"done. report: {summary}  figures: {out / 'report' / 'figures'}")
    return summary
