"""Command line: `python -m mura_lib {describe,train,evaluate,predict}` (also the `mura` script).

Each subcommand is a thin wrapper around library functions. Errors a user can cause are
:class:`~mura_lib.errors.MuraError`; they are printed as one line and exit with status 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mura_lib.errors import MuraError


def _cmd_describe(args: argparse.Namespace) -> int:
    from mura_lib.data.describe import describe_mura

    print(describe_mura(args.root))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mura", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("describe", help="summarise a MURA-v1.1 tree: counts per split and part")
    p.add_argument("root", help="the MURA-v1.1 folder or its parent")
    p.set_defaults(func=_cmd_describe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MuraError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
