"""`lld-probe bench nthr`: the cost of NTHR scoring relative to one forward+backward of the same group.

For each model shape and completion length T it samples a real group of G completions of exactly T
tokens, then times (median of repeats): one forward+backward of the group's GRPO loss, and
nthr_token_scores with the full and the group (V*) vocabulary, both given the old log-probs (which
supply the softmax normaliser, as in a trainer). Peak extra memory is the rise of the resident
high-water mark during the call, measured in a fresh process for the scoring. The V* error is measured against the
exact full-vocabulary scores, on the scores and on the selected token sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import statistics
import time

import torch

from .core import group_advantages, nthr_select, nthr_token_scores
from .scoring import build_group_batch, forward_logps, output_embedding_weight, score_group

PAPER_SCORING_SHARE = 22 / 140  # NTHR 22 s vs model update 140 s (Qwen2.5-Math-1.5B)


def _sample_exact_length(model, tokenizer, length: int, group_size: int, seed: int):
    from .tasks import ArithmeticTask, format_prompt
    question = ArithmeticTask(1).questions(1, seed=seed)[0]
    prompt = tokenizer(format_prompt(tokenizer, question.prompt), return_tensors="pt", add_special_tokens=False)
    torch.manual_seed(seed)
    with torch.no_grad():
        output = model.generate(**prompt, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                min_new_tokens=length, max_new_tokens=length, num_return_sequences=group_size,
                                pad_token_id=tokenizer.pad_token_id)
    prompt_ids = prompt["input_ids"][0].tolist()
    completions = output[:, len(prompt_ids):].tolist()
    return build_group_batch([prompt_ids] * group_size, completions, tokenizer.pad_token_id)


def _median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def peak_extra_mb(function) -> float:
    """Peak resident memory added while `function` runs, in MB (Linux: the high-water mark VmHWM is
    reset through /proc/self/clear_refs first). NaN where /proc is not available."""
    import gc
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        baseline = _status_kb("VmRSS")
    except OSError:
        return float("nan")
    function()
    return max(0, _status_kb("VmHWM") - baseline) / 1024


def _fresh_process_peak_mb(inputs_path: str, vocab: str) -> float:
    """Peak extra memory of nthr_token_scores in a fresh process, whose allocator holds no freed
    memory that the call could reuse unseen."""
    code = "import sys; from lld_probe.bench import _memory_child; _memory_child(sys.argv[1], sys.argv[2])"
    result = subprocess.run([sys.executable, "-c", code, inputs_path, vocab], capture_output=True, text=True,
                            check=True)
    return float(result.stdout.strip().splitlines()[-1])


def _memory_child(inputs_path: str, vocab: str) -> None:
    inputs = torch.load(inputs_path, mmap=True)
    inputs = {key: value.clone() for key, value in inputs.items()}
    call = lambda: nthr_token_scores(inputs["hidden"], inputs["unembed"], inputs["tokens"], inputs["mask"],  # noqa: E731
                                     inputs["correct"], vocab=vocab, token_logprobs=inputs["token_logps"])
    print(peak_extra_mb(call))


def bench_one(model, tokenizer, name: str, length: int, group_size: int, repeats: int, seed: int = 0) -> dict:
    if getattr(model.config, "max_position_embeddings", 0) < length + 64:
        model.config.max_position_embeddings = length + 64   # rotary positions: no learned table to outgrow
    batch = _sample_exact_length(model, tokenizer, length, group_size, seed)
    correct = torch.zeros(group_size, dtype=torch.bool)
    correct[torch.randperm(group_size, generator=torch.Generator().manual_seed(seed))[: group_size // 2]] = True
    advantages = group_advantages(correct.float(), group_size)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        scored = forward_logps(model, batch)
        loss = -(scored.token_logps * advantages[:, None].to(scored.token_logps.device)).sum() / batch.mask.sum()
        loss.backward()

    model.train()
    forward_backward()                                          # warm-up
    fwd_bwd = _median_time(forward_backward, repeats)
    model.zero_grad(set_to_none=True)
    old = score_group(model, batch, with_hidden=True)
    unembed = output_embedding_weight(model).detach()
    args = (old.hidden, unembed, batch.tokens, batch.mask, correct)
    row = {"model": name, "d": unembed.shape[1], "V": unembed.shape[0], "G": group_size, "T": length,
           "fwd_bwd_s": fwd_bwd}
    results = {}
    for vocab in ("full", "group"):
        call = lambda: nthr_token_scores(*args, vocab=vocab, token_logprobs=old.token_logps)  # noqa: E731
        results[vocab] = call()
        row[f"{vocab}_s"] = _median_time(call, repeats)
        row[f"{vocab}_ratio"] = row[f"{vocab}_s"] / fwd_bwd
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "inputs.pt")
        torch.save({"hidden": old.hidden, "unembed": unembed.clone(), "tokens": batch.tokens, "mask": batch.mask,
                    "correct": correct, "token_logps": old.token_logps}, path)
        for vocab in ("full", "group"):
            row[f"{vocab}_peak_mb"] = _fresh_process_peak_mb(path, vocab)
    row["fwd_bwd_peak_mb"] = peak_extra_mb(forward_backward)
    model.zero_grad(set_to_none=True)
    full, group = results["full"], results["group"]
    masked = batch.mask
    row["group_rel_error"] = float((group.scores - full.scores)[masked].norm() / full.scores[masked].norm())
    chosen_full = nthr_select(full.scores, masked, correct, full.anchors)
    chosen_group = nthr_select(group.scores, masked, correct, group.anchors)
    union = int((chosen_full | chosen_group).sum())
    row["selection_jaccard"] = float((chosen_full & chosen_group).sum() / union) if union else 1.0
    row["selected_fraction_full"] = float(chosen_full.sum() / (masked & ~correct[:, None]).sum())
    return row


def format_table(rows: list[dict]) -> str:
    header = ("| model (d, V) | G x T | fwd+bwd | full vocab | group vocab (V*) | peak extra MB full / group (fwd+bwd) "
              "| V* rel. error | selection Jaccard |\n|---|---|---|---|---|---|---|---|")
    lines = [header]
    for r in rows:
        lines.append(f"| {r['model']} ({r['d']}, {r['V']}) | {r['G']} x {r['T']} | {r['fwd_bwd_s']:.3f} s "
                     f"| {r['full_s']:.3f} s ({100 * r['full_ratio']:.1f}%) | {r['group_s']:.4f} s ({100 * r['group_ratio']:.2f}%) "
                     f"| {r['full_peak_mb']:.0f} / {r['group_peak_mb']:.0f} ({r['fwd_bwd_peak_mb']:.0f}) | {r['group_rel_error']:.3g} | {r['selection_jaccard']:.3f} |")
    return "\n".join(lines)


def run_nthr_benchmark(models=("tiny", "smollm2"), lengths=(128, 512), group_size=8, repeats=3, out=None) -> list[dict]:
    from .models import load_model
    rows = []
    for name in models:
        model, tokenizer = load_model(name)
        for length in lengths:
            row = bench_one(model, tokenizer, name, length, group_size, repeats)
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model
    print()
    print(format_table(rows))
    print(f"\nTargets: group vocabulary <= 2% and full vocabulary <= 20% of forward+backward "
          f"(the paper's scoring costs {100 * PAPER_SCORING_SHARE:.0f}% of its model update).")
    if out:
        with open(out, "w") as handle:
            json.dump(rows, handle, indent=1)
    return rows
