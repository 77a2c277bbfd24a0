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


def _protocol(args) -> int:
    from .analysis.protocol_report import write_protocol_report
    from .core import parse_eta
    from .trainers.protocol import ProtocolConfig, run_protocol, save_protocol
    config = ProtocolConfig(model=args.model, task=args.task, questions=args.questions, seed=args.seed,
                            group_size=args.group_size, temperature=args.temperature,
                            max_new_tokens=args.max_new_tokens, variants=args.variants.split(","),
                            optimizer=args.optimizer, lr=args.lr, beta=args.beta, eta=parse_eta(args.eta),
                            vocab=args.vocab, anchor_self=not args.anchor_exclude_self,
                            fresh_samples=args.fresh_samples, bf16=args.bf16)
    out = Path(args.out) if args.out else _default_out("protocol")
    result = run_protocol(config)
    save_protocol(result, out)
    kept = int(result.questions["kept"].sum())
    print(f"kept {kept} of {len(result.questions)} questions (mixed groups); dropped {len(result.questions) - kept}")
    if kept:
        write_protocol_report(out)
        print(f"report: {out / 'summary.md'}  figures: {out / 'figures'}")
    else:
        print("no mixed group: nothing to analyse (try more --questions or another --temperature)")
    return 0


def _demo(args) -> int:
    from .demo import run_demo
    run_demo(quick=args.quick, out=Path(args.out) if args.out else _default_out("demo"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lld-probe", description="Diagnostics for likelihood dynamics in GRPO (LLD, NTHR).")
    commands = parser.add_subparsers(dest="command", required=True)

    bench = commands.add_parser("bench", help="benchmarks that print figures")
    bench_kinds = bench.add_subparsers(dest="kind", required=True)
    nthr = bench_kinds.add_parser("nthr", help="cost of nthr_token_scores vs a forward+backward")
    nthr.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    nthr.add_argument("--lengths", nargs="+", type=int, default=[128, 512])
    nthr.add_argument("--group-size", type=int, default=8)
    nthr.add_argument("--repeats", type=int, default=3)
    nthr.add_argument("--json", default=None, help="also write the rows to this JSON file")
    nthr.set_defaults(func=_bench)

    protocol = commands.add_parser("protocol", help="the paper's per-question one-step LLD protocol")
    protocol.add_argument("--model", default="tiny", help="tiny | smollm2 | a model folder or hub id")
    protocol.add_argument("--task", default="arithmetic", help="arithmetic | arithmetic2 | arithmetic3 | questions.jsonl")
    protocol.add_argument("--questions", type=int, default=32)
    protocol.add_argument("--seed", type=int, default=0)
    protocol.add_argument("--group-size", type=int, default=8)
    protocol.add_argument("--temperature", type=float, default=1.0)
    protocol.add_argument("--max-new-tokens", type=int, default=None)
    protocol.add_argument("--variants", default="grpo,pos_only,random,nthr")
    protocol.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    protocol.add_argument("--lr", type=float, default=None, help="default: 1e-3 for sgd, 1e-6 for adamw")
    protocol.add_argument("--beta", type=float, default=1.0, help="NTHR threshold factor (-inf: every incorrect token)")
    protocol.add_argument("--eta", default="zero", help="paper | zero | p | 1-p | a number in [0, 1]")
    protocol.add_argument("--vocab", choices=["full", "group"], default="full")
    protocol.add_argument("--anchor-exclude-self", action="store_true")
    protocol.add_argument("--fresh-samples", type=int, default=None, help="default: group size; 0 disables")
    protocol.add_argument("--bf16", action="store_true", help="bf16 copy for sampling and the update gradient (float32 parameters and log-likelihoods)")
    protocol.add_argument("--out", default=None)
    protocol.set_defaults(func=_protocol)

    demo = commands.add_parser("demo", help="the main job: protocol + short training comparison + report")
    demo.add_argument("--quick", action="store_true", help="the same on the tiny model in about 2 minutes")
    demo.add_argument("--out", default=None)
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        print(f"lld-probe: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
