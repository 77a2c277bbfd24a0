"""Writes notebooks/*.ipynb from the cell sources below (keep them in sync by re-running this).

    .venv/bin/python scripts/make_notebooks.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = {
    "01_quickstart.ipynb": [
        new_markdown_cell("# lld_probe quick start: the per-question LLD protocol\n\n"
                          "For each question: sample a group of G responses, take **one** update with each method "
                          "(GRPO, Pos Only, NTHR) from the same start, and measure the change Δ(x) of the "
                          "log-likelihood of the correct responses (PAPER: Lazy Likelihood Displacement). Runs on the "
                          "tiny model in a few seconds; pass `model=\"smollm2\"` for the real 135M instruct model."),
        new_code_cell("from lld_probe.protocol import ProtocolConfig, run_protocol\n"
                      "from lld_probe.analysis import method_summary\n\n"
                      "result = run_protocol(ProtocolConfig(model=\"tiny\", questions=10, methods=[\"grpo\", \"pos_only\", \"nthr\"]),\n"
                      "                      progress=False)\n"
                      "print(f\"kept {int(result.questions['mixed'].sum())} mixed groups of {len(result.questions)} questions\")\n"
                      "method_summary(result.protocol)"),
        new_markdown_cell("Δ(x) per question and method (questions sorted by GRPO's Δ, as in the paper's Fig 1):"),
        new_code_cell("from lld_probe.analysis.protocol_figures import fig1, fig4\n"
                      "from IPython.display import Image\n"
                      "paths = fig1(result.protocol, \"nb_figures\")\n"
                      "Image(str(paths[0]))"),
        new_markdown_cell("Per-token NTHR scores of one group: tokens of incorrect responses with a high score push the "
                          "correct responses' likelihood down; NTHR scales their negative gradient by η."),
        new_code_cell("from lld_probe.analysis.protocol_figures import laziest_question, token_heatmap\n"
                      "question = laziest_question(result.protocol)\n"
                      "paths = token_heatmap(result.tokens, question, \"nb_figures\")\n"
                      "Image(str(paths[0]))"),
        new_code_cell("tokens = result.tokens[result.tokens['question_id'] == question]\n"
                      "tokens.sort_values('nthr_score', ascending=False).head(8)[['response_index', 'correct', 'token', 'nthr_score', 'nthr_selected']]"),
    ],
    "02_compare_runs.ipynb": [
        new_markdown_cell("# Comparing training runs: GRPO vs NTHR\n\n"
                          "Loads comparison runs (one run store per method and seed) and computes LLD statistics and "
                          "figures. Set `RUNS` to a folder of `lld-probe compare` output to analyse real runs; by default "
                          "the notebook trains a tiny comparison itself (2 methods x 2 seeds x 4 steps, about 30 s)."),
        new_code_cell("import os\nfrom pathlib import Path\n"
                      "RUNS = os.environ.get(\"LLD_PROBE_RUNS\")\n"
                      "if RUNS is None:\n"
                      "    from lld_probe.integrations.trl.run import TrainSettings, run_compare\n"
                      "    import shutil\n"
                      "    RUNS = \"nb_runs\"\n"
                      "    shutil.rmtree(RUNS, ignore_errors=True)   # a fresh comparison on every execution\n"
                      "    from lld_probe.probes import ProbeSettings\n"
                      "    run_compare(TrainSettings(out=RUNS, steps=4, eval_questions=12, progress=False,\n"
                      "                              probe=ProbeSettings(eval_every=2, probe_every=2)),\n"
                      "                methods=[\"grpo\", \"nthr\"], seeds=[0, 1], out=RUNS)\n"
                      "folders = sorted(p for p in Path(RUNS).iterdir() if (p / \"meta.json\").is_file())\n"
                      "[f.name for f in folders]"),
        new_code_cell("from lld_probe.analysis import load, lld_rate_by_step, accuracy_curves, final_accuracy_table\n"
                      "runs = [load(f) for f in folders]\n"
                      "lld_rate_by_step(runs[0].responses)"),
        new_code_cell("final_accuracy_table(accuracy_curves(runs))"),
        new_code_cell("from lld_probe.analysis.report import lld_table\nlld_table(runs)"),
        new_code_cell("from lld_probe.analysis.training_figures import fig5_accuracy, lld_rate_over_training\n"
                      "from IPython.display import Image, display\n"
                      "display(Image(str(fig5_accuracy(runs, \"nb_figures\")[0])))\n"
                      "display(Image(str(lld_rate_over_training(runs, \"nb_figures\")[0])))"),
    ],
    "03_posthoc_trl_logs.ipynb": [
        new_markdown_cell("# Post-hoc analysis of a plain TRL GRPOTrainer run\n\n"
                          "No probes were attached: what can the completions log tell us? The notebook first produces "
                          "a TRL output directory with a plain `GRPOTrainer` (`log_completions=True`) on the tiny model, "
                          "then reads it with `lld_probe.analysis.load`, which rebuilds groups from identical prompts."),
        new_code_cell("import shutil\nshutil.rmtree(\"nb_trl_run\", ignore_errors=True)\n"
                      "from trl import GRPOConfig, GRPOTrainer\n"
                      "from lld_probe.models import load_model\nfrom lld_probe.tasks import get_task\n"
                      "from lld_probe.integrations.trl.run import build_dataset, reward_function\n\n"
                      "model, tokenizer = load_model(\"tiny\")\ntask = get_task(\"arithmetic\")\n"
                      "config = GRPOConfig(output_dir=\"nb_trl_run\", max_steps=4, per_device_train_batch_size=32, num_generations=8,\n"
                      "                    max_completion_length=16, learning_rate=2e-4, use_cpu=True, bf16=False, logging_steps=1,\n"
                      "                    report_to=[], log_completions=True, disable_tqdm=True, save_strategy=\"no\")\n"
                      "GRPOTrainer(model=model, args=config, reward_funcs=[reward_function(task)],\n"
                      "            train_dataset=build_dataset(task, tokenizer, 32, 0), processing_class=tokenizer).train();"),
        new_code_cell("from lld_probe.analysis import load\nrun = load(\"nb_trl_run\")\n"
                      "print(run.kind, len(run.responses), 'responses in', run.responses['group_id'].nunique(), 'groups')\n"
                      "run.responses[['step', 'group_id', 'completion', 'reward', 'correct', 'advantage']].head(8)"),
        new_markdown_cell("Group success rate p per step: only mixed groups (0 < p < 1) carry a gradient, and they are "
                          "where LLD can happen. Without `logp_after` the log cannot show Δ itself: train with "
                          "`LLDGRPOTrainer` or add `LikelihoodProbeMixin` to your trainer for that."),
        new_code_cell("groups = run.responses.groupby(['step', 'group_id'])['correct'].mean().rename('p').reset_index()\n"
                      "groups.assign(mixed=(groups.p > 0) & (groups.p < 1)).groupby('step').agg(mean_p=('p', 'mean'), mixed=('mixed', 'mean'))"),
        new_code_cell("from lld_probe.analysis.training_figures import fig6_length\nfrom IPython.display import Image\n"
                      "Image(str(fig6_length([run], \"nb_figures\")[0]))"),
        new_code_cell("run.scalar('reward')"),
    ],
}


def main() -> None:
    folder = Path(__file__).resolve().parents[1] / "notebooks"
    folder.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        notebook = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                      "language": "python"}})
        nbformat.write(notebook, folder / name)
        print(f"wrote {folder / name}")


if __name__ == "__main__":
    main()
