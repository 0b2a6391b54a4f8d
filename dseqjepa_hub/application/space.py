"""A Hugging Face Space that runs the browser demo on a published model (`dseqjepa push --space`).

`stage_space(model_repo_id, folder)` writes, into an absent or empty folder (built beside it and
renamed, like every folder writer here):
  app.py            the demo of `dseqjepa_hub.application.demo` on `model_repo_id`, with the example photos
  dseqjepa_hub/, dseqjepa_options.py, pyproject.toml
                    this package's source (without the bundled model), which app.py imports: the Space
                    installs whether or not this version is published on the package index
  requirements.txt  this package's dependencies and its demo extra's (or, with `requirement`, that
                    requirement alone, e.g. a published `dseqjepa-hub[demo]==X`, and no source)
  README.md         the Space card: YAML front matter (sdk gradio, app_file, models, ...) checked by
                    parsing it back with huggingface_hub's SpaceCard
  examples/         the repository's example photos and their licences, when present
Upload it with `hf upload ORG/NAME-demo FOLDER --repo-type space`.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from packaging.requirements import Requirement

from .. import __version__
from ..errors import DSeqJEPAError
from .atomic import atomic_directory, check_empty_folder
from .demo import EXAMPLES_DIR

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # dseqjepa_hub/
OPTIONS_FILE = PACKAGE_DIR.parent / "dseqjepa_options.py"  # the module beside the package (installed or checkout)

FALLBACK_GRADIO_VERSION = "6.31.0"  # the Space's SDK when Gradio is not installed here
APP_TEMPLATE = '''"""Hugging Face Space: the DSeq-JEPA browser demo (dseqjepa_hub.application.demo) on {repo_id}."""

from pathlib import Path

from dseqjepa_hub.application.demo import CSS, build_demo, theme

demo = build_demo({repo_id!r}, examples_dir=Path(__file__).parent / "examples")

if __name__ == "__main__":
    demo.launch(theme=theme(), css=CSS)
'''
CARD_BODY = """
# {title}

The browser demo of [dseqjepa-hub](https://pypi.org/project/dseqjepa-hub/) on
[{repo_id}](https://huggingface.co/{repo_id}): upload an image (or pick an example), choose the
number of regions and the minimum region fraction, and see the ranked discriminative regions,
the saliency map and the DSeq prediction sequence, with the region table.

Run the same app locally: `pip install 'dseqjepa-hub[demo]' && dseqjepa demo --model {repo_id}`.
"""


class SpaceError(DSeqJEPAError):
    """A Space folder that cannot be staged (a bad repo id, a folder that is not empty)."""


def gradio_version() -> str:
    try:
        return version("gradio")
    except PackageNotFoundError:
        return FALLBACK_GRADIO_VERSION


def space_requirements() -> list[str]:
    """The requirements of this package and of its demo extra, as the installed distribution (or, in a
    checkout that is not installed, pyproject.toml) declares them."""
    try:
        declared = requires("dseqjepa-hub") or []
    except PackageNotFoundError:
        project = tomllib.loads((PACKAGE_DIR.parent / "pyproject.toml").read_text())["project"]
        declared = [*project["dependencies"], *(f'{line}; extra == "demo"' for line in project["optional-dependencies"]["demo"])]
    kept = []
    for line in declared:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": "demo"}):
            requirement.marker = None
            kept.append(str(requirement))
    return kept


def copy_source(folder: Path) -> None:
    """This package's source into `folder` as app.py imports it: dseqjepa_hub/ without the bundled model,
    dseqjepa_options.py, and a pyproject.toml naming the version (what the package reads outside an install)."""
    shutil.copytree(PACKAGE_DIR, folder / "dseqjepa_hub", ignore=shutil.ignore_patterns("__pycache__", "default_model"))
    shutil.copy2(OPTIONS_FILE, folder / "dseqjepa_options.py")
    (folder / "pyproject.toml").write_text(
        f'# the version of the dseqjepa_hub/ beside it (read by dseqjepa_hub/__init__.py)\n[project]\n'
        f'name = "dseqjepa-hub"\nversion = "{__version__}"\n'
    )


def stage_space(
    model_repo_id: str,
    folder: str | os.PathLike,
    *,
    requirement: str | None = None,
    title: str | None = None,
    license: str | None = None,
    examples_dir: str | os.PathLike | None = EXAMPLES_DIR,
) -> list[str]:
    """Write the Space for `model_repo_id` into `folder` (absent or empty); returns its file names."""
    try:
        validate_repo_id(model_repo_id)
    except HFValidationError as error:
        raise SpaceError(f"model repo id {model_repo_id!r}: {error}") from None
    folder = Path(folder)
    check_empty_folder(folder)
    name = model_repo_id.split("/")[-1]
    title = title or f"{name} regions"
    card_data = SpaceCardData(
        title=title[:60], sdk="gradio", sdk_version=gradio_version(), app_file="app.py", models=[model_repo_id],
        license=license, tags=["dseq-jepa", "saliency", "vision-transformer"], emoji="🔎", colorFrom="blue",
        colorTo="yellow", pinned=False, short_description="Ranked discriminative regions of DSeq-JEPA",
    )
    content = f"---\n{card_data.to_yaml()}\n---\n" + CARD_BODY.format(title=title, repo_id=model_repo_id)
    parsed = SpaceCard(content).data
    if parsed.sdk != "gradio" or parsed.app_file != "app.py" or parsed.models != [model_repo_id]:
        raise SpaceError(f"the Space card does not parse back as written: {parsed.to_dict()}")
    with atomic_directory(folder) as partial:
        (partial / "app.py").write_text(APP_TEMPLATE.format(repo_id=model_repo_id))
        (partial / "requirements.txt").write_text("\n".join([requirement] if requirement else space_requirements()) + "\n")
        if requirement is None:
            copy_source(partial)
        (partial / "README.md").write_text(content)
        examples = Path(examples_dir) if examples_dir is not None else None
        if examples is not None and examples.is_dir():
            shutil.copytree(examples, partial / "examples")
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
