"""``python -m bench [NAME ...] [--quick] [--list]``: run benchmarks, update docs/benchmarks.{json,md}.

Exits 0 when every selected benchmark ran (or skipped) and every goal held,
1 when a goal missed or a benchmark failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys

from bench.harness import discover, run_benchmarks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer rounds (a smoke test)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    try:
        if args.list:
            for name, module in discover().items():
                print(f"{name}\t{module.TITLE}")
            return 0
        ok = run_benchmarks(args.names, quick=args.quick)
    except KeyError as exc:
        print(f"bench: error: {exc.args[0]}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"RuntimeError: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
