"""`python -m tools.composecheck [compose.yaml]`: print the problems, exit 1 if any."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.composecheck.checks import run_checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.composecheck",
                                     description="Check compose.yaml, the Dockerfile and what they mount.")
    parser.add_argument("compose", nargs="?", default="compose.yaml", type=Path,
                        help="the compose file; its directory is the repository checked (default: compose.yaml)")
    args = parser.parse_args(argv)
    if args.compose.name != "compose.yaml" or not args.compose.is_file():
        parser.error(f"{args.compose}: not a compose.yaml file")
    results = run_checks(args.compose.resolve().parent)
    problems = [f"{check}: {problem}" for check, found in results.items() for problem in found]
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s) in {len(results)} checks", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
