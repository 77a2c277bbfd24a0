"""`lld-probe demo`: the main job. The per-question protocol on SmolLM2-135M (or the tiny model with
--quick), then its report and figures."""

from __future__ import annotations

import time
from pathlib import Path

DEMO_SETTINGS = {
    False: {"model": "smollm2", "questions": 40},
    True: {"model": "tiny", "questions": 24},
}


def run_demo(*, quick: bool = False, out: Path) -> Path:
    from .analysis.protocol_report import write_protocol_report
    from .trainers.protocol import ProtocolConfig, run_protocol, save_protocol

    settings = DEMO_SETTINGS[quick]
    start = time.time()
    print(f"lld-probe demo on {settings['model']!r}: per-question LLD protocol on {settings['questions']} questions")
    config = ProtocolConfig(model=settings["model"], questions=settings["questions"], bf16=not quick)
    result = run_protocol(config)
    protocol_dir = out / "protocol"
    save_protocol(result, protocol_dir)
    kept = int(result.questions["kept"].sum())
    print(f"kept {kept} of {len(result.questions)} questions with mixed groups")
    if kept:
        write_protocol_report(protocol_dir)
    print(f"done in {time.time() - start:.0f} s; report: {protocol_dir / 'summary.md'}, figures: {protocol_dir / 'figures'}")
    return out
