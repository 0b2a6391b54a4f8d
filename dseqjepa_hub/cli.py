"""The `dseqjepa` command line.

Each subcommand is defined beside the code it drives, in a module with a
`register(subparsers)` function that adds its parser and sets `func` (args -> exit code).
This file only assembles them; every command's logic is a function that tests call directly.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "dseqjepa_hub.cli_info",
    "dseqjepa_hub.cli_regions",
    "dseqjepa_hub.datakit.cli",
    "dseqjepa_hub.evaluation.cli",
    "dseqjepa_hub.conversion.cli",
    "dseqjepa_hub.cli_hub",
    "dseqjepa_hub.training.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dseqjepa",
        description="DSeq-JEPA models: rank discriminative regions, embed images, pretrain, convert, publish.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
