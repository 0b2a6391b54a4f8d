"""The layering of docs/ARCHITECTURE.md, read from the source: every import statement of every
module (at any depth, lazy ones included) is checked against the edges the layers allow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {  # import name -> folder
    "dseqjepa_hub": REPO / "dseqjepa_hub",
    "dseqjepa_cli": REPO / "dseqjepa_cli",
    "dseqjepa_train": REPO / "training",
    "dseqjepa_convert": REPO / "conversion",
}
CORE_FILES = ("configuration_dseqjepa", "modeling_dseqjepa", "image_processing_dseqjepa", "regions",
              "pipeline_saliency_ranking", "image_io", "errors")
CORE_THIRD_PARTY = {"torch", "transformers", "huggingface_hub", "numpy", "PIL", "timm"}  # hub: a dependency of transformers
STDLIB = set(sys.stdlib_module_names)


def imports_of(path: Path, package: str) -> list[tuple[int, str, bool]]:
    """(line, absolute top-level-or-sibling name, relative?) of every import in one module."""
    module_parts = [package, *path.relative_to(PACKAGES[package]).with_suffix("").parts]
    if module_parts[-1] == "__init__":
        module_parts.pop()
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module, False))
                continue
            base = module_parts[: len(module_parts) - node.level + (path.name == "__init__.py")]
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found += [(node.lineno, ".".join([*base, name]), True) for name in names]
    return found


def all_imports(package: str):
    for path in sorted(PACKAGES[package].rglob("*.py")):
        for line, name, relative in imports_of(path, package):
            yield path, line, name, relative


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_walk_sees_every_package_and_lazy_imports():
    """Guards the guard: each package has modules, and an import inside a function is seen."""
    for package in PACKAGES:
        assert list(all_imports(package)), package
    lazy = [name for path, _, name, _ in all_imports("dseqjepa_cli") if path.name == "train.py"]
    assert "dseqjepa_train" in lazy


@pytest.mark.parametrize("core", CORE_FILES)
def test_remote_code_core_imports_only_itself_and_its_libraries(core):
    path = PACKAGES["dseqjepa_hub"] / f"{core}.py"
    siblings = {f"dseqjepa_hub.{name}" for name in CORE_FILES}
    bad = []
    for line, name, relative in imports_of(path, "dseqjepa_hub"):
        if relative:
            if name not in siblings:
                bad.append(f"line {line}: {name} (not a remote-code core file)")
        elif top(name) not in CORE_THIRD_PARTY | STDLIB:
            bad.append(f"line {line}: {name}")
    assert not bad, f"{path.name} must import only {sorted(CORE_THIRD_PARTY)}, the stdlib and its core siblings: {bad}"


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("dseqjepa_hub", {"dseqjepa_train", "dseqjepa_convert", "dseqjepa_cli"}),
        ("dseqjepa_train", {"dseqjepa_convert", "dseqjepa_cli"}),
        ("dseqjepa_convert", {"dseqjepa_cli"}),
    ],
)
def test_dependencies_point_inward(package, forbidden):
    allowed_exception = PACKAGES["dseqjepa_hub"] / "__main__.py"  # `python -m dseqjepa_hub` runs the CLI
    bad = [f"{path.relative_to(REPO)}:{line}: {name}" for path, line, name, _ in all_imports(package)
           if top(name) in forbidden and path != allowed_exception]
    assert not bad, bad


def test_cli_modules_import_only_the_standard_library_at_module_level():
    """What `dseqjepa CMD --help` executes: module-level statements of the CLI package."""
    bad = []
    for path in sorted(PACKAGES["dseqjepa_cli"].glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module]
            else:
                continue
            bad += [f"{path.name}:{node.lineno}: {name}" for name in names if top(name) not in STDLIB | {"dseqjepa_options"}]
    assert not bad, bad


def test_the_option_values_module_imports_nothing():
    """dseqjepa_options sits beneath the CLI and the libraries: it may import nothing (not even the stdlib)."""
    tree = ast.parse((REPO / "dseqjepa_options.py").read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def test_help_of_every_command_imports_neither_torch_nor_transformers():
    script = (
        "import sys\n"
        "from dseqjepa_cli import COMMANDS, main\n"
        "for argv in [['--help'], ['--version'], *[[name, '--help'] for name in COMMANDS]]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0, (argv, done.code)\n"
        "heavy = sorted(name for name in ('torch', 'transformers', 'timm', 'numpy', 'dseqjepa_hub') if name in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout, done.stdout[-500:]
