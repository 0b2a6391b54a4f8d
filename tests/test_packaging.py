"""The distribution: one wheel holding only `dseqjepa*` import packages, the card and the data files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    # A copy without build outputs: setuptools builds in the source tree and never prunes build/.
    source = tmp_path_factory.mktemp("source") / "dseqjepa-hub"
    shutil.copytree(REPO, source, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("dseqjepa_hub-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_installs_only_prefixed_import_packages(wheel):
    top_level = {name.split("/")[0] for name in wheel.namelist()}
    dist_info = {name for name in top_level if name.endswith(".dist-info")}
    assert len(dist_info) == 1
    assert top_level - dist_info == {"dseqjepa_hub", "dseqjepa_cli", "dseqjepa_train", "dseqjepa_convert", "dseqjepa_options.py"}


def test_wheel_carries_the_model_card_and_data(wheel):
    names = set(wheel.namelist())
    assert wheel.read("dseqjepa_hub/model_card.md") == (REPO / "model_card.md").read_bytes()
    assert {"dseqjepa_hub/default_model/model.safetensors", "dseqjepa_hub/default_model/config.json"} <= names
    shipped = {Path(name).name for name in names if name.startswith("dseqjepa_train/configs/")}
    assert shipped == {path.name for path in (REPO / "training/configs").glob("*.yaml")}
    assert "dseqjepa_train/datakit/scenes.py" in names and "dseqjepa_train/evaluation/evaluate.py" in names


def test_wheel_holds_every_module_of_the_tree(wheel):
    """The package list in pyproject.toml is written by hand: a new subpackage must not be left out."""
    names = set(wheel.namelist())
    folders = {"dseqjepa_hub": "dseqjepa_hub", "dseqjepa_cli": "dseqjepa_cli", "dseqjepa_train": "training",
               "dseqjepa_convert": "conversion"}
    missing = [f"{package}/{path.relative_to(REPO / folder).as_posix()}"
               for package, folder in folders.items() for path in sorted((REPO / folder).rglob("*.py"))
               if f"{package}/{path.relative_to(REPO / folder).as_posix()}" not in names]
    assert not missing, f"modules left out of the wheel (pyproject.toml [tool.setuptools] packages): {missing}"
