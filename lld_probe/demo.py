"""`lld-probe demo`: the main job. On SmolLM2-135M-Instruct (or the tiny model with --quick):
1. the per-question LLD protocol (Fig 1, Fig 3, Fig 4, Table 1, predicted vs measured Delta);
2. a short GRPO vs NTHR training comparison with the likelihood probes;
3. one report (summary.md + figures) over both."""

from __future__ import annotations

import time
from pathlib import Path

ALL_VARIANTS = ["grpo", "pos_only", "random", "nthr"]

# sized to the demo's time budgets on a 2-core CPU: <= 15 min (smollm2), <= 2 min (tiny)
DEMO_SETTINGS = {
    False: {"model": "smollm2", "questions": 16, "train_steps": 4, "prompts_per_step": 2, "eval_every": 4,
            "eval_questions": 8},
    True: {"model": "tiny", "questions": 24, "train_steps": 12, "prompts_per_step": 4, "eval_every": 4,
           "eval_questions": None},
}


def _stage(start: float, text: str) -> None:
    print(f"[{time.time() - start:6.0f} s] {text}", flush=True)


def run_demo(*, quick: bool = False, out: Path) -> Path:
    from .analysis.protocol_report import write_protocol_report
    from .analysis.report import write_report
    from .models.hardware import fast_bf16
    from .protocol import ProtocolConfig, run_protocol, save_protocol
    from .integrations.trl.run import TrainSettings, run_training

    settings = DEMO_SETTINGS[quick]
    out = Path(out)
    bf16 = fast_bf16()
    start = time.time()
    _stage(start, f"lld-probe demo on {settings['model']!r} (bf16 compute: {bf16}); results in {out}")
    _stage(start, f"1/3 per-question LLD protocol on {settings['questions']} questions, variants {ALL_VARIANTS}")
    config = ProtocolConfig(model=settings["model"], questions=settings["questions"], variants=ALL_VARIANTS,
                            fresh_samples=0, bf16=bf16)
    result = run_protocol(config)
    protocol_dir = out / "protocol"
    save_protocol(result, protocol_dir)
    kept = int(result.questions["kept"].sum())
    _stage(start, f"kept {kept} of {len(result.questions)} questions with mixed groups")
    if kept:
        write_protocol_report(protocol_dir)
    runs = [protocol_dir] if kept else []
    for method in ("grpo", "nthr"):
        _stage(start, f"2/3 training {method}: {settings['train_steps']} steps x {settings['prompts_per_step']} prompts x G=8")
        run_dir = out / "train" / f"{method}-seed0"
        run_training(TrainSettings(out=str(run_dir), method=method, model=settings["model"],
                                   steps=settings["train_steps"], prompts_per_step=settings["prompts_per_step"],
                                   eval_every=settings["eval_every"], eval_questions=settings["eval_questions"],
                                   probe_every=2, bf16=bf16))
        runs.append(run_dir)
    _stage(start, "3/3 report and figures")
    summary = write_report(runs, out / "report")
    _stage(start, f"done. report: {summary}  figures: {out / 'report' / 'figures'}")
    return summary
