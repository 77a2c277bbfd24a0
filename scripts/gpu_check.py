"""One-GPU check of the probes' precision, the protocol and the probes' overhead, printed as one table.

    python scripts/gpu_check.py                 # CUDA, SmolLM2-135M (under 8 minutes on one GPU, no network)
    python scripts/gpu_check.py --cpu --quick   # CPU, the tiny model (under a minute; run by the tests)

1. precision: a one-step probed TRL run in bf16 autocast and one in float32; the stored logp_before,
   logp_after and Delta against an independent float32 re-score of the same responses (each row alone through
   the plain model) at the stored parameters (before: the initial weights, after: the trained ones);
2. the protocol (lld_probe.protocol) on a few questions, float32: questions kept, its time;
3. the probes' overhead in a bf16 run: the probed trainer against TRL's plain GRPOTrainer (probed / plain wall
   time, and the time inside the probes as a share of the rest).
docs/gpu-check.md says how to install it on a machine without network.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # the checkout, when not installed

import torch  # noqa: E402

GPU = {"model": "smollm2", "prompts_per_step": 4, "group_size": 8, "questions": 8, "overhead_steps": 4}
QUICK = {"model": "tiny", "prompts_per_step": 2, "group_size": 4, "questions": 4, "overhead_steps": 2}


def float32_sequence_logps(model, prompts, completions, temperature: float) -> list[float]:
    """Each row alone through the plain float32 model, no autocast: the state at t-1 predicts token t."""
    values = []
    device = next(model.parameters()).device
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        for prompt, completion in zip(prompts, completions):
            logits = model(input_ids=torch.tensor([prompt + completion], device=device)).logits[0].float()
            predicting = logits[len(prompt) - 1: len(prompt) + len(completion) - 1] / temperature
            logps = torch.log_softmax(predicting, dim=-1)[torch.arange(len(completion)), torch.tensor(completion)]
            values.append(float(logps.double().sum()))
    return values


def precision_check(shape: dict, folder: Path, *, bf16: bool, use_cpu: bool) -> dict:
    """One-step probed run; max |stored - float32 re-score| of logp_before, logp_after and Delta."""
    from lld_probe.integrations.trl.run import TrainSettings, run_training
    from lld_probe.models import load_model
    from lld_probe.probes import ProbeSettings
    from lld_probe.store.run_store import read_run_store

    model, tokenizer = load_model(shape["model"])
    initial = {name: value.detach().clone() for name, value in model.state_dict().items()}
    out = folder / f"precision-{'bf16' if bf16 else 'float32'}"
    settings = TrainSettings(out=str(out), model=shape["model"], steps=1, prompts_per_step=shape["prompts_per_step"],
                             group_size=shape["group_size"], bf16=bf16, progress=False,
                             probe=ProbeSettings(method="grpo", eval_every=0, probe_set_size=0),
                             extra={"use_cpu": use_cpu})
    trainer = run_training(settings, model=model, tokenizer=tokenizer)
    store = read_run_store(out)
    batch = trainer.last_probed.batch
    prompts = [batch.input_ids[r, : int(batch.prompt_lengths[r])].tolist() for r in range(batch.size)]
    completions = [batch.tokens[r, : int(batch.mask[r].sum())].tolist() for r in range(batch.size)]
    stored = store.responses[store.responses["step"] == 1].reset_index(drop=True)
    reference, _ = load_model(shape["model"])
    reference.to(next(trainer.model.parameters()).device)
    reference.load_state_dict(initial)
    before = torch.tensor(float32_sequence_logps(reference, prompts, completions, trainer.temperature))
    reference.load_state_dict(trainer.model.state_dict())
    after = torch.tensor(float32_sequence_logps(reference, prompts, completions, trainer.temperature))
    stored_before = torch.tensor(stored["logp_before"].to_numpy())
    stored_after = torch.tensor(stored["logp_after"].to_numpy())
    delta, stored_delta = after - before, stored_after - stored_before
    return {"precision": "bf16 autocast" if bf16 else "float32", "responses": len(stored),
            "probe_precision": store.meta.get("probe_precision"),
            "max_error_before": float((stored_before - before).abs().max()),
            "max_error_after": float((stored_after - after).abs().max()),
            "max_error_delta": float((stored_delta - delta).abs().max()),
            "delta_signs_flipped": int((torch.sign(stored_delta) != torch.sign(delta)).sum()),
            "max_abs_delta": float(delta.abs().max())}


def protocol_check(shape: dict, folder: Path, device: str) -> dict:
    from lld_probe.protocol import ProtocolConfig, run_protocol, save_protocol
    start = time.perf_counter()
    result = run_protocol(ProtocolConfig(model=shape["model"], questions=shape["questions"], fresh_samples=0,
                                         device=device), progress=False)
    save_protocol(result, folder / "protocol")
    return {"questions": len(result.questions), "kept": int(result.questions["mixed"].sum()),
            "seconds": time.perf_counter() - start}


def overhead_check(shape: dict) -> dict:
    from lld_probe.bench_probes import run_probe_overhead
    result = run_probe_overhead(model=shape["model"], steps=shape["overhead_steps"],
                                prompts_per_step=shape["prompts_per_step"], repeats=1, bf16=True)
    return {"ratio": result["probed_s"] / result["plain_s"], "probe_share_of_rest": result["probe_share_of_rest"],
            "plain_s": result["plain_s"], "probed_s": result["probed_s"]}


def table(results: dict) -> str:
    lines = ["| check | figure | value |", "|---|---|---|"]
    for run in results["precision"]:
        name = f"probed TRL run, {run['precision']} ({run['responses']} responses, probes: {run['probe_precision']})"
        for key, figure in (("max_error_before", "max |stored - float32 re-score| of logp_before"),
                            ("max_error_after", "max |stored - float32 re-score| of logp_after"),
                            ("max_error_delta", "max |stored - float32 re-score| of Delta"),
                            ("delta_signs_flipped", "Delta signs that differ from the re-score's"),
                            ("max_abs_delta", "max |Delta| (float32 re-score), for scale")):
            lines.append(f"| {name} | {figure} | {run[key]:.3g} |")
    protocol = results["protocol"]
    lines.append(f"| protocol, {protocol['questions']} questions | kept (mixed groups) / seconds | "
                 f"{protocol['kept']} / {protocol['seconds']:.1f} |")
    overhead = results["overhead"]
    lines.append(f"| probe overhead, bf16 training, float32 probes | probed / plain wall time | {overhead['ratio']:.3f} "
                 f"({overhead['probed_s']:.1f} s / {overhead['plain_s']:.1f} s) |")
    lines.append(f"| probe overhead, bf16 training, float32 probes | time inside the probes / rest of the run | "
                 f"{overhead['probe_share_of_rest']:.1%} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="the tiny model, small shapes (under a minute on a CPU)")
    parser.add_argument("--out", default=None, help="folder for the runs and results.json (default: a temporary one)")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible: run with --cpu (and --quick for the tiny model)")
    shape = QUICK if args.quick else GPU
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""           # TRL and the protocol pick the CPU
    device = "cpu" if args.cpu else "cuda"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.out or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        results = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "model": shape["model"],
                   "precision": [precision_check(shape, folder, bf16=bf16, use_cpu=args.cpu) for bf16 in (True, False)],
                   "protocol": protocol_check(shape, folder, device), "overhead": overhead_check(shape)}
        results["seconds"] = time.perf_counter() - start
        (folder / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\ngpu_check on {results['device']}, model {shape['model']}, {results['seconds']:.0f} s\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
