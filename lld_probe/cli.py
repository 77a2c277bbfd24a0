"""`lld-probe` command line: thin subcommands over the library."""

from __future__ import annotations

import argparse
import sys


def _bench(args) -> int:
    from .bench import run_nthr_benchmark
    run_nthr_benchmark(models=args.models, lengths=args.lengths, group_size=args.group_size,
                       repeats=args.repeats)
    return 0


def _demo(args) -> int:
    from .bench import run_nthr_benchmark
    print("lld-probe demo: the protocol and training demo are not built yet; running the NTHR benchmark.")
    run_nthr_benchmark(models=["tiny"], lengths=[128], group_size=8, repeats=1)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lld-probe", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="benchmarks that print figures")
    bench_kinds = bench.add_subparsers(dest="kind", required=True)
    nthr = bench_kinds.add_parser("nthr", help="cost of nthr_token_scores vs a forward+backward")
    nthr.add_argument("--models", nargs="+", default=["tiny", "smollm2"])
    nthr.add_argument("--lengths", nargs="+", type=int, default=[128, 512])
    nthr.add_argument("--group-size", type=int, default=8)
    nthr.add_argument("--repeats", type=int, default=3)
    nthr.set_defaults(func=_bench)
    demo = commands.add_parser("demo", help="the main job")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
