"""Atomic writes: build beside the destination, then rename over it in one step.

A reader (or a later run) sees the previous file or folder or the complete new one (while a folder
is replaced, for an instant between two renames, neither), never a half-written one, whatever
moment the writer is killed at.

Temporaries carry the writer's process id (`.NAME.tmp-PID`, `.NAME.partial-PID-XXXX`), so that
`remove_stale_temporaries` clears what a killed writer left without touching the work of a
writer that is still running (two runs may share an output folder); every write first clears
what killed writers of the same destination left beside it. A write that fails for lack
of space or permission raises `OutputWriteError` naming the destination, and leaves no temporary.

Permissions: what a writer creates gets the modes of a newly created file or folder under the
user's umask (0644 and 0755 under umask 022), whatever the library that wrote it chose (safetensors
creates 0600 files, `tempfile.mkdtemp` 0700 folders); executable files stay executable.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import DSeqJEPAError

_TEMPORARY = re.compile(r"^\..+\.(?:tmp-(\d+)|partial-(\d+)-[^/]*)$")  # the names below, with the writer's pid


class FolderNotEmptyError(DSeqJEPAError):
    """An output folder that exists and is not empty: writers never merge into or overwrite one."""


class OutputWriteError(DSeqJEPAError):
    """An output that cannot be written: a full disk, a read-only file system, no permission."""


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS tells (Linux: /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and put back at once
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


def apply_umask(path: str | os.PathLike, *, recursive: bool = False) -> None:
    """Give `path` (and, if `recursive`, everything below it) the mode a new file or folder gets
    under the umask: 0o666 & ~umask for files, 0o777 & ~umask for folders and executable files.
    Symbolic links are left alone; a file system that keeps no modes is not an error."""
    umask = current_umask()
    paths = [Path(path)]
    if recursive and paths[0].is_dir() and not paths[0].is_symlink():
        for folder, folders, files in os.walk(paths[0]):  # links are not followed
            paths += [Path(folder, name) for name in folders + files]
    for item in paths:
        try:
            mode = os.lstat(item).st_mode
            if stat.S_ISLNK(mode):
                continue
            base = 0o777 if stat.S_ISDIR(mode) or mode & 0o111 else 0o666
            if stat.S_IMODE(mode) != base & ~umask:
                os.chmod(item, base & ~umask)
        except OSError:
            continue


def _write_error(path: Path, error: OSError) -> OutputWriteError:
    return OutputWriteError(f"{path}: cannot write it ({error.strerror or error}); nothing was left half-written")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, clear_stale: bool = True) -> None:
    """Call `write(temporary_path)`, then rename the result over `path` (parents are created).

    clear_stale: first remove what killed writers of `path` left beside it, which lists its folder;
    False where the caller cleared the whole folder before it started (the folder jobs: a listing
    per file would grow with the folder, 4 ms a file among 5,000)."""
    path = Path(path)
    if clear_stale:
        _remove_stale_temporaries_of(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temporary)
        apply_umask(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise _write_error(path, error) from None
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, *, clear_stale: bool = True) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), clear_stale=clear_stale)


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
    folder is removed and `path` is left as it was; a killed writer leaves a hidden
    `.NAME.partial-PID-*` folder beside it, which `remove_stale_temporaries` clears.
    work: fill this folder (created if absent) instead of a fresh one, and keep it on an error, so
    that a later call can resume in it.
    """
    path = Path(path)
    if not replace:
        check_empty_folder(path)
    _remove_stale_temporaries_of(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if work is None:
            partial = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-{os.getpid()}-"))
        else:
            partial = Path(work)
            partial.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _write_error(path, error) from None
    try:
        yield partial
        if not replace:
            check_empty_folder(path)  # it may have been filled meanwhile
        apply_umask(partial, recursive=True)  # mkdtemp's 0700, safetensors' 0600 -> the umask's modes
        previous = partial.with_name(f"{partial.name}-previous")
        shutil.rmtree(previous, ignore_errors=True)  # left by a writer killed between the renames below
        if path.is_dir():
            os.replace(path, previous)
        os.replace(partial, path)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException as error:
        if work is None:
            shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, OSError):
            raise _write_error(path, error) from None
        raise


def remove_stale_temporaries(folder: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Remove the temporary files and folders of this module's writers that were killed (their
    process no longer runs) in `folder` (and below, if `recursive`); returns what was removed.
    Temporaries of running writers, and every other file, are left alone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return _remove_stale(folder.rglob(".*") if recursive else folder.glob(".*"))


def _remove_stale_temporaries_of(path: Path) -> list[Path]:
    """What killed writers of `path` itself left beside it (every writer clears these before it starts)."""
    return _remove_stale(path.parent.glob(f".{glob.escape(path.name)}.*")) if path.parent.is_dir() else []


def _remove_stale(candidates: Iterator[Path]) -> list[Path]:
    removed = []
    for candidate in candidates:
        match = _TEMPORARY.match(candidate.name)
        if match is None or _is_running(int(match.group(1) or match.group(2))):
            continue
        if candidate.is_dir() and not candidate.is_symlink():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _is_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
