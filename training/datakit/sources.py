"""Where the offline data sets come from: Debian packages, found under a source root.

Every source is a Debian package whose files live at fixed paths below a root directory
("/" on a Debian machine; a test or a user may point `source_root` at a copy with the same
layout). `ensure_packages` installs missing packages with apt-get when the root is "/";
`write_licences` records, inside each built data set, which packages it used, their licences
and their copyright files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dseqjepa_hub.errors import DSeqJEPAError


class DataKitError(DSeqJEPAError):
    """A data set could not be built; the message says what is missing and what to do."""


@dataclass(frozen=True)
class SourcePackage:
    name: str
    marker: str  # a folder relative to the source root that exists once the package is installed
    licence: str  # short summary; the full text is the package's copyright file


PACKAGES = {
    package.name: package
    for package in (
        SourcePackage("tuxpaint-stamps-default", "usr/share/tuxpaint/stamps", "GPL-2"),
        SourcePackage("plasma-workspace-wallpapers", "usr/share/wallpapers", "GPL-2+"),
        SourcePackage("mate-backgrounds", "usr/share/backgrounds/mate", "GPL-2+ (the nature photos)"),
        SourcePackage("opencv-doc", "usr/share/doc/opencv-doc/examples/data", "Apache-2.0 AND BSD-3-Clause (Files: *)"),
        SourcePackage("dataset-fashion-mnist", "usr/share/datasets/fashion-mnist", "MIT"),
    )
}


def ensure_packages(names: list[str], source_root: str | os.PathLike = "/") -> Path:
    """Make sure the packages' files exist under `source_root`; install them with apt-get if
    the root is the system root and they are missing. Returns the root as a Path."""
    root = Path(source_root)
    missing = [name for name in names if not (root / PACKAGES[name].marker).is_dir()]
    if not missing:
        return root
    expected = ", ".join(str(root / PACKAGES[name].marker) for name in missing)
    if root.resolve() != Path("/"):
        raise DataKitError(
            f"source root {root} lacks the files of {', '.join(missing)} (expected {expected}); "
            "point --source-root at a folder with the Debian layout, or leave it out to install them with apt-get"
        )
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise DataKitError(
            f"the Debian packages {', '.join(missing)} are not installed (expected {expected}) and apt-get is "
            "not available here; install them on a Debian/Ubuntu machine and pass --source-root"
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise DataKitError(
            f"the Debian packages {', '.join(missing)} are not installed; run as root (or first run "
            f"`sudo apt-get install -y {' '.join(missing)}`)"
        )
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in ([apt_get, "update"], [apt_get, "install", "-y", "--no-install-recommends", *missing]):
        print("running:", " ".join(command), flush=True)
        result = subprocess.run(command, env=environment)
        if result.returncode != 0:
            raise DataKitError(f"`{' '.join(command)}` failed with exit code {result.returncode}")
    still_missing = [name for name in missing if not (root / PACKAGES[name].marker).is_dir()]
    if still_missing:
        raise DataKitError(f"apt-get finished but {', '.join(still_missing)} left no files at the expected paths")
    return root


def _package_version(name: str, root: Path) -> str:
    if root.resolve() != Path("/") or shutil.which("dpkg-query") is None:
        return "unknown"
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def _licences_in_copyright(text: str) -> list[str]:
    """The distinct `License:` short names of a machine-readable (DEP-5) copyright file."""
    names = re.findall(r"^License:\s*(\S.*)$", text, flags=re.MULTILINE)
    return sorted(set(name.strip() for name in names))


def write_licences(out_dir: Path, used: dict[str, int], root: Path, title: str) -> None:
    """Write LICENSES.md and copy each used package's copyright file into out_dir/licenses/.

    used: package name -> number of its files the data set draws on.
    """
    licence_dir = out_dir / "licenses"
    licence_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Licences of {title}",
        "",
        "Built offline by `dseqjepa data build` from the Debian packages below. The images are",
        "derived works of these packages' files and keep their licences; do not commit them to the",
        "dseqjepa-hub repository. Each package's full copyright file is copied to `licenses/`.",
        "",
        "| package | version | files used | licence | licences named in its copyright file |",
        "|---|---|---|---|---|",
    ]
    for name, count in sorted(used.items()):
        copyright_file = root / "usr/share/doc" / name / "copyright"
        if copyright_file.is_file():
            text = copyright_file.read_text(encoding="utf-8", errors="replace")
            (licence_dir / f"{name}.copyright").write_text(text, encoding="utf-8")
            named = ", ".join(_licences_in_copyright(text)) or "(not machine-readable)"
        else:
            named = f"(no copyright file at {copyright_file})"
        lines.append(f"| {name} | {_package_version(name, root)} | {count} | {PACKAGES[name].licence} | {named} |")
    (out_dir / "LICENSES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
