"""`lld-probe` command line: thin subcommands over the library."""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path


def _default_out(kind: str) -> Path:
    return Path("runs") / f"{kind}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _bench(args) -> int:
    from .bench import run_nthr_benchmark
    run_nthr_benchmark(models=args.models, lengths=args.lengths, group_size=args.group_size,
                       repeats=args.repeats, out=args.json)
    return 0


def _bench_probes(args) -> int:
    import os

    from .bench_probes import relaunch, run_probe_overhead
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return relaunch(args.nproc, _without_option(sys.argv[1:], "--nproc"))
    run_probe_overhead(model=args.model, steps=args.steps, prompts_per_step=args.prompts_per_step,
                       repeats=args.repeats, method=args.method, out=args.json, bf16=args.bf16)
    return 0


def _bench_rescore(args) -> int:
    from .bench_rescore import run_rescore_benchmark
    run_rescore_benchmark(model=args.model, prompts=args.prompts, group_size=args.group_size, length=args.length,
                          repeats=args.repeats, max_tokens=args.max_tokens, device=args.device)
    return 0


def _without_option(argv: list, name: str) -> list:
    """argv without `name VALUE` / `name=VALUE`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            kept.append(arg)
    return kept


def _protocol_config(args, optimizer: str, lr, moments=None):
    from .options import settings_from
    from .protocol import ProtocolConfig
    return settings_from(args, ProtocolConfig, task=_task_name(args), optimizer=optimizer, lr=lr,
                         optimizer_moments=moments,
                         methods=[name.strip() for name in args.methods.split(",") if name.strip()])


def _task_name(args) -> str:
    """--task, with --split/--question-column/--answer-column/--task-config folded into an hf: task name."""
    from .tasks import hf_task_name
    if not args.task.startswith("hf:") or "?" in args.task:
        return args.task
    return hf_task_name(args.task[3:], split=args.split, config=args.task_config, question=args.question_column,
                        answer=args.answer_column)


def _optimizer_runs(args) -> list:
    """(optimizer, lr) pairs from --optimizer sgd,adamw and --lr (one value, or one per optimizer)."""
    optimizers = [name.strip() for name in args.optimizer.split(",") if name.strip()]
    for name in optimizers:
        if name not in ("sgd", "adamw"):
            raise ValueError(f"--optimizer must be sgd, adamw or a comma list of them, got {args.optimizer!r}")
    try:
        lrs = [float(value) for value in args.lr.split(",")] if args.lr else [None]
    except ValueError:
        raise ValueError(f"--lr must be a number or a comma list of numbers, got {args.lr!r}") from None
    if len(lrs) == 1:
        lrs = lrs * len(optimizers)
    if len(lrs) != len(optimizers):
        raise ValueError(f"--lr needs one value or one per optimizer ({len(optimizers)}), got {args.lr!r}")
    return list(zip(optimizers, lrs))


def _protocol(args) -> int:
    from .analysis.protocol_report import write_protocol_report
    from .protocol import run_protocol, save_protocol
    out = Path(args.out) if args.out else _default_out("protocol")
    moments = [name.strip() for name in args.optimizer_moments.split(",")] if args.optimizer_moments else [None]
    runs = [(optimizer, lr, moment) for optimizer, lr in _optimizer_runs(args) for moment in moments]
    model = tokenizer = None
    folders = {}
    for optimizer, lr, moment in runs:
        config = _protocol_config(args, optimizer, lr, moment)
        if model is None:
            from .models import load_model
            model, tokenizer = load_model(config.model)           # run_protocol moves it to config.device
        folder = out if len(runs) == 1 else out / (f"{optimizer}-{moment}" if len(moments) > 1 else f"{optimizer}")
        if len(runs) > 1:
            print(f"== {optimizer} (lr {config.resolved().lr:g}{f', {moment} moments' if moment else ''}) -> {folder}")
        result = run_protocol(config, model=model, tokenizer=tokenizer)
        save_protocol(result, folder)
        mixed = int(result.questions["mixed"].sum())
        print(f"kept {mixed} of {len(result.questions)} questions (mixed groups); dropped {len(result.questions) - mixed}")
        if args.mixed is not None and mixed < args.mixed:
            print(f"warning: only {mixed} mixed groups among {args.questions} questions (--mixed {args.mixed}): "
                  f"raise --questions", file=sys.stderr)
        if mixed:
            write_protocol_report(folder)
            folders[f"{optimizer} lr {result.config.lr:g}" + (f" {moment}" if len(moments) > 1 else "")] = folder
            print(f"report: {folder / 'summary.md'}  figures: {folder / 'figures'}")
        else:
            print("no mixed group: nothing to analyse (try more --questions or another --temperature)")
    if len(folders) > 1:
        import pandas as pd

        from .analysis.optimizer_comparison import comparison_markdown
        from .store import write_text
        path = write_text(comparison_markdown({name: pd.read_parquet(folder / "protocol.parquet")
                                               for name, folder in folders.items()}), out / "comparison.md")
        print(f"side by side: {path}")
    return 0


def _train_settings(args, out: str):
    """The run's settings, every value checked (before any model loads)."""
    from .integrations.trl.options import parse_trl_options
    from .integrations.trl.run import TrainSettings
    from .options import settings_from
    return settings_from(args, TrainSettings, out=out, extra=parse_trl_options(args.trl)).resolved()


def _train(args) -> int:
    from .integrations.trl.run import run_training
    out = args.out or str(_default_out(f"train-{args.method}"))
    try:
        trainer = run_training(_train_settings(args, out))
    except FileExistsError as error:
        if "already holds a run store" not in str(error):
            raise
        raise FileExistsError(f"{out} already holds a run store: choose another --out, or continue it with "
                              f"--resume (checkpoints come from --save-steps)") from error
    if trainer.accelerator.is_main_process:
        print(f"run store: {out}  ({trainer.state.global_step} steps in {trainer.train_seconds:.0f} s, "
              f"{trainer.accelerator.num_processes} process(es))")
    return 0


def _compare(args) -> int:
    from .analysis.report import write_report
    from .integrations.trl.run import run_compare
    out = args.out or str(_default_out("compare"))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    folders = run_compare(_train_settings(args, out), methods, seeds, out=out)
    write_report(folders, Path(out) / "report")
    print(f"{len(folders)} runs under {out}; report: {Path(out) / 'report' / 'summary.md'}")
    return 0


def _report(args) -> int:
    from .analysis.report import write_report
    path = write_report(args.runs, Path(args.out), correct_threshold=args.correct_threshold,
                        correct_reward=args.correct_reward)
    print(f"report: {path}")
    return 0


def _figures(args) -> int:
    from .analysis.report import write_figures
    written = write_figures(args.runs, Path(args.out), correct_threshold=args.correct_threshold,
                            correct_reward=args.correct_reward)
    print(f"{len(written)} figures in {args.out}")
    return 0


def _add_training_arguments(parser, *, skip: tuple = ()) -> None:
    """TrainSettings' options (with ProbeSettings' method, NTHR and probe options), generated from the
    dataclasses: the same names, defaults and help texts as the Python API."""
    from .integrations.trl.run import TrainSettings
    from .options import add_options
    add_options(parser, TrainSettings, skip=skip)
    parser.add_argument("--trl", action="append", default=[], metavar="KEY=VALUE",
                        help="any GRPOConfig / LLDConfig field, typed as TRL's own parser types it (repeatable), "
                             "e.g. --trl mask_truncated_completions=true --trl loss_type=dapo")


def _demo(args) -> int:
    from .demo import run_demo
    run_demo(quick=args.quick, out=Path(args.out) if args.out else _default_out("demo"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lld-probe", description="Diagnostics for likelihood dynamics in GRPO (LLD, NTHR).")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_bench_commands(commands)
    _add_protocol_command(commands)
    _add_training_commands(commands)
    _add_analysis_commands(commands)
    _add_rescore_command(commands)
    demo = commands.add_parser("demo", help="the main job: protocol + short training comparison + report")
    demo.add_argument("--quick", action="store_true", help="the same on the tiny model in about 2 minutes")
    demo.add_argument("--out", default=None)
    demo.set_defaults(func=_demo)
    return parser


def _add_bench_commands(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print figures")
    bench_kinds = bench.add_subparsers(dest="kind", required=True)
    nthr = bench_kinds.add_parser("nthr", help="cost of nthr_token_scores vs a forward+backward")
    nthr.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    nthr.add_argument("--lengths", nargs="+", type=int, default=[128, 512])
    nthr.add_argument("--group-size", type=int, default=8)
    nthr.add_argument("--repeats", type=int, default=3)
    nthr.add_argument("--json", default=None, help="also write the rows to this JSON file")
    nthr.set_defaults(func=_bench)
    probes = bench_kinds.add_parser("probes", help="probe overhead: the trainer with probes vs plain GRPOTrainer")
    probes.add_argument("--model", default="tiny")
    probes.add_argument("--method", default="grpo", choices=["grpo", "pos_only", "random", "nthr"],
                        help="grpo (default): the probed run trains exactly like the plain one, so the difference "
                             "is the probes alone; NTHR's selection is computed and logged either way")
    probes.add_argument("--steps", type=int, default=10)
    probes.add_argument("--prompts-per-step", type=int, default=4)
    probes.add_argument("--repeats", type=int, default=2)
    probes.add_argument("--nproc", type=int, default=1,
                        help="processes (torchrun, gloo on CPU); prompts per step are split over them")
    probes.add_argument("--json", default=None)
    probes.add_argument("--bf16", action="store_true",
                        help="both trainers train under bf16 autocast; the probes' forwards stay float32")
    probes.set_defaults(func=_bench_probes)
    rescore = bench_kinds.add_parser("rescore", help="re-scoring a logged step vs the training forward of it")
    rescore.add_argument("--model", default="tiny")
    rescore.add_argument("--prompts", type=int, default=8)
    rescore.add_argument("--group-size", type=int, default=8)
    rescore.add_argument("--length", type=int, default=64, help="completion tokens")
    rescore.add_argument("--repeats", type=int, default=3)
    rescore.add_argument("--max-tokens", type=int, default=None, help="packed tokens per forward (default 512)")
    rescore.add_argument("--device", default=None)
    rescore.set_defaults(func=_bench_rescore)


def _add_protocol_command(commands) -> None:
    from .options import add_options
    from .protocol import ProtocolConfig
    protocol = commands.add_parser("protocol", help="the paper's per-question one-step LLD protocol")
    add_options(protocol, ProtocolConfig)
    protocol.add_argument("--methods", default="grpo,pos_only,random,nthr", help="methods compared, comma list")
    protocol.add_argument("--optimizer", default="sgd",
                          help="sgd | adamw | sgd,adamw (both from the same samples' seeds, side by side in comparison.md)")
    protocol.add_argument("--lr", default=None,
                          help="one value, or one per optimizer (1e-3,1e-4); default: 1e-3 for sgd, 1e-6 for adamw")
    protocol.add_argument("--optimizer-moments", default=None,
                          help="with --optimizer-state: warm (default) | cold (a fresh AdamW at the same parameters) | "
                               "warm,cold (both, side by side in comparison.md)")
    hf = protocol.add_argument_group("hf: tasks (--task hf:PATH_OR_NAME)")
    hf.add_argument("--split", default="test", help="the split")
    hf.add_argument("--task-config", default=None, help="the data set's config (e.g. main for gsm8k)")
    hf.add_argument("--question-column", default="question", help="the question column")
    hf.add_argument("--answer-column", default="answer",
                    help="the reference column ('#### N', \\boxed{} or the plain answer)")
    protocol.add_argument("--out", default=None)
    protocol.set_defaults(func=_protocol)


def _add_training_commands(commands) -> None:
    train = commands.add_parser("train", help="one GRPO / NTHR / Pos Only / Random training run with probes")
    _add_training_arguments(train)
    train.set_defaults(func=_train)

    compare = commands.add_parser("compare", help="one run per method and seed, then a comparison report")
    compare.add_argument("--methods", default="grpo,nthr,pos_only")
    compare.add_argument("--seeds", default="0,1,2")
    _add_training_arguments(compare, skip=("method", "seed", "resume"))
    compare.set_defaults(func=_compare)


def _add_analysis_commands(commands) -> None:
    report = commands.add_parser("report", help="markdown summary with tables and figures for runs")
    report.add_argument("runs", nargs="+", help="run stores, protocol folders, TRL output dirs or verl dumps")
    report.add_argument("--out", required=True)
    _add_correctness_arguments(report)
    report.set_defaults(func=_report)

    figures = commands.add_parser("figures", help="paper-style figures (PNG and PDF) for runs")
    figures.add_argument("runs", nargs="+")
    figures.add_argument("--out", required=True)
    _add_correctness_arguments(figures)
    figures.set_defaults(func=_figures)


def _rescore(args) -> int:
    import os

    from .bench_probes import relaunch
    from .options import settings_from
    from .rescore import RescoreSettings, rescore
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return relaunch(args.nproc, _without_option(args.argv, "--nproc"))
    summary = rescore(args.run, args.out, settings_from(args, RescoreSettings))
    if int(os.environ.get("RANK", "0")) == 0:
        for step, why in summary.skipped.items():
            print(f"skipped step {step}: {why}")
        for warning in summary.warnings:
            print(f"warning: {warning}")
        print(summary.line())
    return 0


def _add_rescore_command(commands) -> None:
    from .options import add_options
    from .rescore.runner import RescoreSettings
    rescore = commands.add_parser("rescore", help="likelihood dynamics of a run trained without the probes, from its "
                                                  "logged responses and checkpoints (docs/rescore.md)")
    rescore.add_argument("run", help="a TRL output_dir (completions/ or lld_tokens/, checkpoint-N/), a run store, "
                                     "or a verl dump folder ({step}.jsonl; with --checkpoints)")
    rescore.add_argument("--out", required=True, help="the run store to write (the same --out resumes)")
    add_options(rescore, RescoreSettings, skip=("nthr_eta",))
    rescore.add_argument("--nproc", type=int, default=1, help="processes (torchrun), each a share of the checkpoints")
    rescore.set_defaults(func=_rescore)


def _add_correctness_arguments(parser) -> None:
    parser.add_argument("--correct-threshold", type=float, default=None,
                        help="correct means the deciding reward >= this (default: binary 0/1, or the rule the run "
                             "store records)")
    parser.add_argument("--correct-reward", default=None,
                        help="the reward function (column) that decides correctness (default: the weighted reward)")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]     # what a relaunch under torchrun repeats
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as error:
        print(f"lld-probe: error: {error}", file=sys.stderr)
        return 2
    finally:
        _end_processes()


def _end_processes() -> None:
    """Under torchrun / accelerate launch: leave the process group cleanly (else gloo aborts at exit)."""
    import importlib.util
    if importlib.util.find_spec("torch") is None or "torch" not in sys.modules:
        return
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
