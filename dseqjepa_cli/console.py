"""What every command shows on the console, and `--quiet` / `--verbose`.

By default: one progress bar per job where stderr is a terminal (none in a log file, where each of
its updates would be a line), the command's result or one-line summary on stdout, and problems on
stderr; the libraries draw no bars (the model classes switch transformers' off) and log only what
is wrong. `--quiet`: errors only (no bar, no summary, no warnings). `--verbose`: the bar even
where stderr is not a terminal, and this package's information lines, one line each: the model loaded
(name, class, parameters, dtype, device, input size), the work and how it is split (images, batches,
workers, threads), its time, and what training does; transformers stays at warnings (its information
level prints whole config and processor dumps).
A command's result itself (`info`, `eval`'s table) is printed whatever the level.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings


def add_console_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("console")
    levels = group.add_mutually_exclusive_group()
    levels.add_argument("-q", "--quiet", action="store_true", help="errors only: no progress bar, summary or warning")
    levels.add_argument("-v", "--verbose", action="store_true",
                        help="also what the job does, a line each (the model loaded, the work and how it is split, its time), "
                        "and the progress bar where stderr is not a terminal")


def show_progress(args: argparse.Namespace) -> bool:
    """Whether the command's job draws its progress bar."""
    return not args.quiet and (args.verbose or sys.stderr.isatty())


def say(args: argparse.Namespace, text: str) -> None:
    """A summary or status line on stdout, unless --quiet."""
    if not args.quiet:
        print(text)


def log(args: argparse.Namespace):
    """`say` as the `log=` callable the libraries take."""
    return lambda text: say(args, text)


@contextlib.contextmanager
def console(args: argparse.Namespace):
    """The libraries' logging and warnings at the command's level while it runs, restored afterwards.
    Pillow's decoder warnings (a malformed metadata tag, a short read of an image it still decodes)
    are shown with --verbose only: the image was read, and nothing in them is for the user to do.
    The decoding processes are forked inside, with these filters."""
    with warnings.catch_warnings():
        if args.quiet:
            warnings.simplefilter("ignore")
        elif not args.verbose:
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\.|$)")
        if args.quiet or args.verbose:
            with _library_logging(args):
                yield
        else:
            yield


@contextlib.contextmanager
def _library_logging(args: argparse.Namespace):
    """transformers' and this package's loggers at --quiet's or --verbose's level, restored afterwards."""
    level = logging.ERROR if args.quiet else logging.INFO
    transformers_level = logging.ERROR if args.quiet else logging.WARNING
    verbosity = os.environ.get("TRANSFORMERS_VERBOSITY")
    os.environ["TRANSFORMERS_VERBOSITY"] = "error" if args.quiet else "warning"  # transformers imported later
    transformers_logging = sys.modules.get("transformers.utils.logging")  # or already imported (tests, python -m)
    before = transformers_logging.get_verbosity() if transformers_logging else None
    if transformers_logging:
        transformers_logging.set_verbosity(transformers_level)
    ours = [logging.getLogger(name) for name in ("dseqjepa_hub", "dseqjepa_train", "dseqjepa_convert")]
    levels = [logger.level for logger in ours]
    handler = logging.StreamHandler(sys.stderr) if args.verbose else None
    for logger in ours:
        logger.setLevel(level)
        if handler:
            logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, previous in zip(ours, levels):
            logger.setLevel(previous)
            if handler:
                logger.removeHandler(handler)
        if verbosity is None:
            os.environ.pop("TRANSFORMERS_VERBOSITY", None)
        else:
            os.environ["TRANSFORMERS_VERBOSITY"] = verbosity
        transformers_logging = sys.modules.get("transformers.utils.logging")
        if transformers_logging:
            transformers_logging.set_verbosity(before if before is not None else logging.WARNING)
