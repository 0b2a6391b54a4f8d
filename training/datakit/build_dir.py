"""Build a data set folder atomically and resumably.

Work happens in `<out>.partial` beside the destination. Its `build.json` holds the build's
parameters; a later run with the same parameters resumes there (builders skip finished items),
one with other parameters starts it afresh. `finish` renames the folder to its destination in
one step, so a destination folder is either absent, the previous complete build, or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from dseqjepa_hub.atomic import atomic_write, atomic_write_text
from .sources import DataKitError


def write_json(path: Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=False) + "\n")


def save_image(image, path: Path, **save_options) -> None:
    """Save a Pillow image atomically (format from the suffix)."""
    atomic_write(path, lambda temporary: image.save(temporary, format=_FORMATS[path.suffix.lower()], **save_options))


_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def start(out: Path, parameters: dict, force: bool) -> Path:
    """Return the working folder for building `out` with `parameters` (resuming when it matches)."""
    out = Path(out)
    if out.exists() and not force:
        raise DataKitError(f"{out} already exists; pass --force to rebuild it (it is replaced only once the new build is complete)")
    partial = out.with_name(out.name + ".partial")
    record = partial / "build.json"
    if partial.exists():
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if previous == parameters:
            print(f"resuming the unfinished build in {partial}", flush=True)
            return partial
        print(f"discarding {partial}: it was started with other parameters", flush=True)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_json(record, parameters)
    return partial


def finish(partial: Path, out: Path) -> None:
    """Move the completed build into place, replacing a previous build of `out` if any."""
    out = Path(out)
    previous = out.with_name(out.name + ".old")
    if previous.exists():
        shutil.rmtree(previous)
    if out.exists():
        os.replace(out, previous)
    os.replace(partial, out)
    if previous.exists():
        shutil.rmtree(previous)
