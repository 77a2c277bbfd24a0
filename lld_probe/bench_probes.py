"""`lld-probe bench probes`: the probes' overhead, measured in one process against the same trainer
without probes (TRL's plain GRPOTrainer, same settings and seed).

Runs are alternated (plain, probed, plain, probed, ...). Reported: the wall-time overhead from the
median and from the fastest run of each kind (noise on a shared machine only adds time), and the
probed trainer's own clock of the time spent inside the probes, as a share of the rest of its run
(the step time without probes, measured in the same run).

With bf16=True both trainers train under TRL's bf16 autocast while the probes' forwards run in float32
(lld_probe.scoring.precision): the figure is the price of float32 probe numbers in a bf16 run.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace


def _timed_run(settings) -> tuple[float, float]:
    from .models import load_model
    from .integrations.trl.run import make_trainer
    model, tokenizer = load_model(settings.model)
    trainer, _ = make_trainer(settings, model=model, tokenizer=tokenizer)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    recorder = getattr(trainer, "recorder", None)
    if recorder is not None and recorder.comm.world_size > 1:       # bytes sent for split groups' NTHR
        from .probes.old_policy import split_group_indices
        groups = len(split_group_indices(recorder.last.probed.generation.layout)) * settings.steps
        _EXCHANGE.append(recorder.comm.traffic.get("nthr", 0) / max(groups, 1))
    return seconds, getattr(trainer, "probe_seconds", 0.0)


_EXCHANGE: list = []


def relaunch(nproc: int, argv: list) -> int:
    """Run this benchmark again under torchrun with nproc processes (gloo on CPU)."""
    import os
    import subprocess
    import sys
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "-m", "lld_probe", *argv]
    return subprocess.run(command, env={"OMP_NUM_THREADS": "1", **os.environ}).returncode


def run_probe_overhead(model: str = "tiny", steps: int = 10, prompts_per_step: int = 4, repeats: int = 2,
                       method: str = "grpo", out=None, bf16: bool = False) -> dict:
    from .integrations.trl.run import TrainSettings
    from .probes import ProbeSettings
    plain_times, probed_times, probe_seconds = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        base = TrainSettings(out=folder, model=model, probe=ProbeSettings(method=method), steps=steps,
                             prompts_per_step=prompts_per_step, progress=False, bf16=bf16)
        for repeat in range(repeats):
            plain_times.append(_timed_run(replace(base, probes=False, out=f"{folder}/plain{repeat}"))[0])
            seconds, in_probes = _timed_run(replace(base, out=f"{folder}/probed{repeat}"))
            probed_times.append(seconds)
            probe_seconds.append(in_probes)
    plain, probed = statistics.median(plain_times), statistics.median(probed_times)
    in_probes = statistics.median(probe_seconds)
    result = {"model": model, "method": method, "steps": steps, "prompts_per_step": prompts_per_step,
              "training_precision": "bf16 autocast" if bf16 else "float32", "probe_precision": "float32",
              "plain_s": plain, "probed_s": probed, "overhead": probed / plain - 1,
              "overhead_fastest": min(probed_times) / min(plain_times) - 1,
              "probe_s": in_probes, "probe_share_of_probed": in_probes / probed,
              "probe_share_of_rest": in_probes / (probed - in_probes),
              "plain_runs_s": plain_times, "probed_runs_s": probed_times, "probe_runs_s": probe_seconds,
              "processes": _world_size(),
              "nthr_bytes_per_split_group": statistics.median(_EXCHANGE) if _EXCHANGE else 0.0}
    if _rank() != 0:
        return result
    precision = "bf16 autocast training, float32 probe forwards" if bf16 else "float32"
    print(f"{model} {method} ({precision}): {steps} steps x {prompts_per_step} prompts x G=8, "
          f"{result['processes']} process(es), "
          f"{result['nthr_bytes_per_split_group']:.0f} bytes sent per split group | plain GRPOTrainer {plain:.1f} s | "
          f"with probes {probed:.1f} s | wall overhead {100 * result['overhead']:+.1f}% (median), "
          f"{100 * result['overhead_fastest']:+.1f}% (fastest runs) | time inside the probes {in_probes:.1f} s = "
          f"{100 * result['probe_share_of_rest']:.1f}% of the rest of the probed run")
    if out:
        with open(out, "w") as handle:
            json.dump(result, handle, indent=1)
    return result


def _world_size() -> int:
    import os
    return int(os.environ.get("WORLD_SIZE", "1"))


def _rank() -> int:
    import os
    return int(os.environ.get("RANK", "0"))
