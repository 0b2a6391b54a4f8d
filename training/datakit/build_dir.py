"""Build a data set folder atomically and resumably.

Work happens in `<out>.partial` beside the destination. Its `build.json` holds the build's
parameters; a later run with the same parameters resumes there (builders skip finished items),
one with other parameters starts it afresh. A finished build is renamed to its destination in
one step (`atomic_directory`), so a destination folder is either absent, the previous complete
build, or the new one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dseqjepa_hub.application.atomic import atomic_directory, atomic_write, atomic_write_text

from .sources import DataKitError


def write_json(path: Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=False) + "\n")


def save_image(image, path: Path, **save_options) -> None:
    """Save a Pillow image atomically (format from the suffix)."""
    atomic_write(path, lambda temporary: image.save(temporary, format=_FORMATS[path.suffix.lower()], **save_options))


_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


@contextmanager
def building(out: Path, parameters: dict, force: bool) -> Iterator[Path]:
    """Yield the working folder for building `out` with `parameters` (resumed when they match); on
    success it replaces `out` (`atomic_directory`), on an error it stays for the next run to resume."""
    out = Path(out)
    if out.exists() and not force:
        raise DataKitError(f"{out} already exists; pass --force to rebuild it (it is replaced only once the new build is complete)")
    work = out.with_name(out.name + ".partial")
    record = work / "build.json"
    if work.exists():
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous == parameters:
            print(f"resuming the unfinished build in {work}", flush=True)
        else:
            print(f"discarding {work}: it was started with other parameters", flush=True)
            shutil.rmtree(work)
    write_json(record, parameters)
    with atomic_directory(out, replace=force, work=work) as folder:
        yield folder
