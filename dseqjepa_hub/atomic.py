"""Atomic writes: build beside the destination, then rename over it in one step.

A reader (or a later run) sees the previous file or folder or the complete new one (while a folder
is replaced, for an instant between two renames, neither), never a half-written one, whatever
moment the writer is killed at.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DSeqJEPAError

_PARTIAL = ".partial-"  # in the names of atomic_directory's temporary folders


class FolderNotEmptyError(DSeqJEPAError):
    """An output folder that exists and is not empty: writers never merge into or overwrite one."""


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)`, then rename the result over `path` (parents are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def check_empty_folder(path: str | os.PathLike) -> None:
    """Raise FolderNotEmptyError unless `path` is absent or an empty folder."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FolderNotEmptyError(
            f"{path} exists and is not an empty folder; nothing was written (give an absent or empty folder)"
        )


@contextmanager
def atomic_directory(path: str | os.PathLike, *, replace: bool = False, work: Path | None = None) -> Iterator[Path]:
    """Yield a folder beside `path` to fill; on success it is renamed to `path`.

    `path` must be absent or empty (`check_empty_folder`, on entry and again before the rename),
    unless `replace`: then a previous `path` is swapped out and removed. On an error the yielded
    folder is removed and `path` is left as it was; a killed writer leaves a hidden `.NAME.partial-*`
    folder beside it, which `remove_partials` clears.
    work: fill this folder (created if absent) instead of a fresh one, and keep it on an error, so
    that a later call can resume in it.
    """
    path = Path(path)
    if not replace:
        check_empty_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if work is None:
        partial = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}{_PARTIAL}"))
    else:
        partial = Path(work)
        partial.mkdir(parents=True, exist_ok=True)
    try:
        yield partial
        if not replace:
            check_empty_folder(path)  # it may have been filled meanwhile
        previous = partial.with_name(f"{partial.name}-previous")
        shutil.rmtree(previous, ignore_errors=True)  # left by a writer killed between the renames below
        if path.is_dir():
            os.replace(path, previous)
        os.replace(partial, path)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        if work is None:
            shutil.rmtree(partial, ignore_errors=True)
        raise


def remove_partials(folder: str | os.PathLike) -> None:
    """Remove the temporary folders that killed `atomic_directory` writers left in `folder`.

    Only for a folder with one writer at a time: another writer's folder in progress would go too.
    """
    for leftover in Path(folder).glob(f".*{_PARTIAL}*"):
        shutil.rmtree(leftover, ignore_errors=True)
