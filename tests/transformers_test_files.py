"""transformers' common test files, from the source distribution of the installed transformers version.

The sdist ships `tests/test_*_common.py` but not four helper modules they import; `common_tests_root`
writes stand-ins for those (named below, each with what it leaves out) beside the extracted files.
Everything lives in a cache outside the repository (`$DSEQJEPA_TEST_CACHE`, default
`~/.cache/dseqjepa-tests`), downloaded once per transformers version with pip from the package registry.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from pathlib import Path

import transformers

PACKAGE = "transformers_tests"  # the sdist's tests/ under a name that cannot clash with this repository's
CAT_PHOTO = Path(__file__).resolve().parent.parent / "examples" / "images" / "chelsea.jpg"
# The unpacked files are cached across checkouts: the stand-in reads the photo's path of this checkout at run time.
os.environ["DSEQJEPA_TEST_CAT_PHOTO"] = str(CAT_PHOTO)

STAND_INS = {
    # ModelTesterMixin's base: torch.export tests (tests/exporters/ is not in the sdist: they do not run).
    f"{PACKAGE}/exporters/test_export.py": '''
        class ExportTesterMixin:
            """Stand-in: tests/exporters/test_export.py is not in the transformers sdist."""
    ''',
    # Only checked against: a model test must not inherit it unless the model generates (ours does not).
    f"{PACKAGE}/generation/test_utils.py": '''
        class GenerationTesterMixin:
            """Stand-in: tests/generation/test_utils.py is not in the transformers sdist."""
    ''',
    # ConfigTester.check_config_arguments_init: one non-default value for each of PreTrainedConfig's fields.
    f"{PACKAGE}/utils/test_configuration_utils.py": '''
        config_common_kwargs = {
            "return_dict": False,
            "output_hidden_states": True,
            "output_attentions": True,
            "dtype": "float16",
            "chunk_size_feed_forward": 5,
            "architectures": ["BertModel"],
            "id2label": {0: "label"},
            "label2id": {"label": "0"},
            "problem_type": "regression",
        }
    ''',
    # Test images by URL (transformers' CI maps them to pre-fetched files): the COCO cats photo becomes a
    # local cat photo, so that the backend-equivalence tests run offline on a real photograph.
    "utils/fetch_hub_objects_for_ci.py": '''
        import os

        def url_to_local_path(url):
            return os.environ["DSEQJEPA_TEST_CAT_PHOTO"] if url.endswith("/000000039769.jpg") else url
    ''',
}


class Unavailable(Exception):
    """The common test files cannot be had here (no registry, say); the message says why."""


def cache_dir() -> Path:
    return Path(os.environ.get("DSEQJEPA_TEST_CACHE") or Path.home() / ".cache" / "dseqjepa-tests")


def common_tests_root(version: str = transformers.__version__) -> Path:
    """The folder to put on sys.path to import `transformers_tests.test_modeling_common` etc.,
    fetched and unpacked on first use (one process at a time: pytest-xdist workers wait on a lock)."""
    stand_ins = hashlib.sha256(repr(sorted(STAND_INS.items())).encode()).hexdigest()[:12]
    root = cache_dir() / f"transformers-{version}-{stand_ins}"  # the stand-ins changed: unpacked anew
    if (root / PACKAGE / "test_modeling_common.py").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".transformers-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / PACKAGE / "test_modeling_common.py").is_file():
            unpack(download_sdist(version, root.parent), root, version)
    return root


def download_sdist(version: str, into: Path) -> Path:
    sdist = into / f"transformers-{version}.tar.gz"
    if sdist.is_file():
        return sdist
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", f"transformers=={version}", "-d", str(into)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"pip download of the transformers=={version} sdist timed out") from None
    if result.returncode or not sdist.is_file():
        lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise Unavailable(f"pip could not download the transformers=={version} sdist: {lines[-1]}")
    return sdist


def unpack(sdist: Path, root: Path, version: str) -> None:
    """The sdist's tests/*.py as the package `transformers_tests` under `root`, with the stand-ins."""
    with tempfile.TemporaryDirectory(dir=root.parent) as partial_dir:
        partial = Path(partial_dir) / "root"
        prefix = f"transformers-{version}/tests/"
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.startswith(prefix) and "/" not in member.name[len(prefix):]:
                    member.name = f"{PACKAGE}/{member.name[len(prefix):]}"
                    archive.extract(member, partial, filter="data")
        if not (partial / PACKAGE / "test_modeling_common.py").is_file():
            raise Unavailable(f"{sdist}: no tests/test_modeling_common.py in the transformers sdist")
        for name, text in STAND_INS.items():
            path = partial / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip())
        for package in (partial / PACKAGE, *(partial / PACKAGE).iterdir()):
            if package.is_dir():
                (package / "__init__.py").touch()
        shutil.rmtree(root, ignore_errors=True)
        partial.rename(root)
