"""The `dseqjepa` command line (import package `dseqjepa_cli`, folder `dseqjepa_cli/`).

A separate package from `dseqjepa_hub` because importing `dseqjepa_hub` registers the model
with transformers' Auto classes and so imports torch and transformers (seconds), while
`dseqjepa --help` and `dseqjepa CMD --help` should answer at once. `COMMANDS` maps each command
to the module that defines its arguments; only the module of the command being run is
imported, and each imports the libraries it drives (`dseqjepa_hub`, `dseqjepa_train`,
`dseqjepa_convert`) inside its `run`, never at module level. The values of choices and defaults that
the libraries implement come from `dseqjepa_options`, which imports nothing.

A command module has `DESCRIPTION`, `add_arguments(parser)` and `run(args) -> exit code`.
Every command takes `-q/--quiet` and `-v/--verbose` (`console`: one progress bar per job, one
summary line, the libraries silent unless something is wrong). Any `dseqjepa_hub.errors.DSeqJEPAError`
that reaches `main` becomes one line,
`dseqjepa CMD: error: MESSAGE`, and exit code 1; usage errors are one line too, exit code 2; output piped into a
reader that has stopped (`| head -1`) ends quietly, exit code 141 (128 + SIGPIPE, as a shell reports it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib.metadata import version

from .console import add_console_options, console

COMMANDS = {  # name -> (module, one-line help)
    "regions": ("dseqjepa_cli.regions", "rank discriminative regions of images; write overlays (and JSON)"),
    "embed": ("dseqjepa_cli.embed", "embed images into a .safetensors or .npy file"),
    "info": ("dseqjepa_cli.info", "print a model's configuration and parameter count"),
    "train": ("dseqjepa_cli.train", "pretrain DSeq-JEPA or the I-JEPA baseline"),
    "data": ("dseqjepa_cli.data", "build offline data sets from Debian packages"),
    "eval": ("dseqjepa_cli.eval", "linear probe, kNN or region quality of a frozen encoder"),
    "convert": ("dseqjepa_cli.convert", "convert a checkpoint (this project's, the authors', I-JEPA's, "
                "transformers', timm's) into a model folder"),
    "export": ("dseqjepa_cli.export", "export a model folder to another library's weights"),
    "push": ("dseqjepa_cli.push", "publish a model folder to the Hugging Face Hub"),
    "visualize": ("dseqjepa_cli.visualize", "draw regions, saliency, attention, similarity, clusters or the prediction "
                  "sequence of images"),
    "demo": ("dseqjepa_cli.demo", "serve the browser demo (Gradio) on this machine"),
}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's parser, but a usage error is one line (the problem, then where the options are listed), not the
    usage block followed by the problem; exit code 2 as argparse's."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command` (if any) gets its full set of arguments."""
    parser = OneLineErrorParser(
        prog="dseqjepa",
        description="DSeq-JEPA models: rank discriminative regions, embed images, pretrain, convert, publish.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('dseqjepa-hub')}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=module.DESCRIPTION)
        module.add_arguments(sub)
        add_console_options(sub)
        sub.set_defaults(run=module.run)
        _show_ranges(sub)
    return parser


def _show_ranges(parser: argparse.ArgumentParser) -> None:
    """Append each numeric option's range (its type's `bounds`, dseqjepa_cli.arguments) to its --help line."""
    for action in parser._actions:  # argparse offers no public walk over a parser's arguments
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _show_ranges(child)
        elif getattr(action.type, "bounds", None) and action.help is not argparse.SUPPRESS:
            action.help = f"{action.help or ''}{'; ' if action.help else ''}{action.type.bounds}"


def main(argv: list[str] | None = None) -> int:
    """Run `dseqjepa ARGV` -> exit code. Output piped into a reader that stops early (`dseqjepa info default |
    head -1`) ends quietly with 141, the exit code of a command that a shell's SIGPIPE stops."""
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # what is still buffered fails here, not in Python's flush at exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit writes nowhere
        return SIGPIPE_EXIT_CODE


SIGPIPE_EXIT_CODE = 128 + 13


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((item for item in argv if not item.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with console(args):
            return int(args.run(args) or 0)
    except Exception as error:
        errors = sys.modules.get("dseqjepa_hub.errors")  # never imported: cannot be one of ours
        if errors is None or not isinstance(error, errors.DSeqJEPAError):
            raise
        message = str(error).strip()
        if "\nOriginal Traceback" in message:  # raised in a DataLoader worker: torch put its traceback first
            message = message.splitlines()[-1].split(": ", 1)[-1]  # its last line, "module.Class: message"
        message = " ".join(line.strip() for line in message.splitlines() if line.strip())  # one line
        print(f"dseqjepa {args.command}: error: {message}", file=sys.stderr)
        return 1
