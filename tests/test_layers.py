"""The layering of docs/ARCHITECTURE.md, read from the source.

Every import statement of every module (at any depth, lazy ones included) is resolved to a module
of this repository or a third-party package. Each module belongs to one layer; an import from one
layer into another is an edge. The document's `edges` block lists, for each pair of layers, the
exact modules imported across it: an edge the code has and the document lacks fails, and so does
an edge the document lists and the code no longer has. Imports within a layer are free, except in
the remote-code core, which imports only its own files and the libraries a Hub folder may need.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
PACKAGES = {  # import name -> folder
    "dseqjepa_hub": REPO / "dseqjepa_hub",
    "dseqjepa_cli": REPO / "dseqjepa_cli",
    "dseqjepa_train": REPO / "training",
    "dseqjepa_convert": REPO / "conversion",
    "dseqjepa_options": REPO / "dseqjepa_options.py",  # one module
}
CORE_FILES = ("configuration_dseqjepa", "modeling_dseqjepa", "image_processing_dseqjepa", "regions",
              "pipeline_saliency_ranking", "image_io", "errors")
CORE_THIRD_PARTY = {"torch", "transformers", "huggingface_hub", "numpy", "PIL", "timm"}  # hub: a dependency of transformers
STDLIB = set(sys.stdlib_module_names)


def module_name(path: Path, package: str) -> str:
    if PACKAGES[package].is_file():
        return package
    parts = [package, *path.relative_to(PACKAGES[package]).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path, package): path for package, folder in PACKAGES.items()
            for path in ([folder] if folder.is_file() else sorted(folder.rglob("*.py")))}


MODULES = all_modules()


def layer(module: str) -> str:
    """The layer of one of this repository's modules."""
    package, _, rest = module.partition(".")
    if package == "dseqjepa_hub":
        if rest in CORE_FILES:
            return "core"
        if rest == "application" or rest.startswith("application."):
            return "application"
        return "package"  # dseqjepa_hub/__init__.py (registration) and __main__.py
    return {"dseqjepa_cli": "cli", "dseqjepa_train": "training", "dseqjepa_convert": "conversion",
            "dseqjepa_options": "options"}[package]


PREFIXES = {"core": "dseqjepa_hub.", "package": "dseqjepa_hub.", "application": "dseqjepa_hub.application.",
            "training": "dseqjepa_train.", "conversion": "dseqjepa_convert.", "cli": "dseqjepa_cli.",
            "options": "dseqjepa_options."}


def short(module: str) -> str:
    """A module as the document names it: without its layer's package (`modeling_dseqjepa`,
    `loading`, `checkpoint`), or the package itself (`dseqjepa_hub`, `dseqjepa_train`)."""
    return module.removeprefix(PREFIXES[layer(module)])


def resolve(name: str) -> str:
    """`name` (absolute, as imported) as the deepest module of this repository it names, or itself."""
    while name and name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement of one file; `from X import name` counts
    as an import of the submodule X.name when that is a module of this repository."""
    package_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if candidate in MODULES else base))
    return found


def code_edges() -> dict[tuple[str, str], set[str]]:
    """(from layer, to layer) -> the modules of `to` (short names) imported from `from`, across layers only."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        for _, name in imports_of(path, module):
            target = resolve(name)
            if target in MODULES and layer(target) != layer(module):
                edges[layer(module), layer(target)].add(short(target))
    return edges


def documented_edges() -> dict[tuple[str, str], set[str]]:
    """The ```edges block of docs/ARCHITECTURE.md: lines `FROM -> TO: module module ...`."""
    block = re.search(r"```edges\n(.*?)```", ARCHITECTURE.read_text(), re.S)
    assert block, "docs/ARCHITECTURE.md has no ```edges block"
    edges = {}
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        match = re.fullmatch(r"\s*(\w+) -> (\w+): (.+)", line)
        assert match, f"an edges line reads `FROM -> TO: module ...`, found {line!r}"
        edges[match.group(1), match.group(2)] = set(match.group(3).split())
    return edges


def test_the_walk_sees_every_package_and_lazy_imports():
    """Guards the guard: each layer has modules, and an import inside a function is seen."""
    assert {layer(module) for module in MODULES} == {"core", "package", "application", "training", "conversion", "cli", "options"}
    lazy = [resolve(name) for _, name in imports_of(PACKAGES["dseqjepa_cli"] / "train.py", "dseqjepa_cli.train")]
    assert any(name.startswith("dseqjepa_train") for name in lazy)


def test_the_document_lists_exactly_the_edges_of_the_code():
    code, documented = code_edges(), documented_edges()
    missing = {f"{a} -> {b}: {' '.join(sorted(code[a, b] - documented.get((a, b), set())))}"
               for a, b in code if code[a, b] - documented.get((a, b), set())}
    stale = {f"{a} -> {b}: {' '.join(sorted(documented[a, b] - code.get((a, b), set())))}"
             for a, b in documented if documented[a, b] - code.get((a, b), set())}
    assert not missing, f"imports across layers that docs/ARCHITECTURE.md does not list (add them, or remove the import): {sorted(missing)}"
    assert not stale, f"edges docs/ARCHITECTURE.md lists that the code no longer has: {sorted(stale)}"


# The allowed directions: dependencies point inward, towards the core. The document's edges must
# lie inside these; a new direction is a change of architecture, made here and in the document.
ALLOWED = {
    ("package", "core"), ("package", "application"), ("package", "cli"),  # __main__: `python -m dseqjepa_hub`
    ("application", "core"), ("application", "package"),
    ("training", "core"), ("training", "package"), ("training", "application"),
    ("conversion", "core"), ("conversion", "package"), ("conversion", "application"),
    ("cli", "core"), ("cli", "package"), ("cli", "application"), ("cli", "training"), ("cli", "conversion"),
    *((layer, "options") for layer in ("application", "training", "conversion", "cli")),  # values only, no code
}


def test_every_edge_points_inward():
    wrong = sorted(f"{a} -> {b}: {sorted(modules)}" for (a, b), modules in code_edges().items() if (a, b) not in ALLOWED)
    assert not wrong, f"imports against the layering: {wrong}"
    users = [module for module, path in MODULES.items() if layer(module) == "package"
             and any(resolve(name).startswith("dseqjepa_cli") for _, name in imports_of(path, module))]
    assert users in ([], ["dseqjepa_hub.__main__"]), users


@pytest.mark.parametrize("core", CORE_FILES)
def test_remote_code_core_imports_only_itself_and_its_libraries(core):
    module = f"dseqjepa_hub.{core}"
    bad = []
    for line, name in imports_of(MODULES[module], module):
        target = resolve(name)
        if target in MODULES:
            if layer(target) != "core":
                bad.append(f"line {line}: {name} (not a remote-code core file)")
        elif name.split(".")[0] not in CORE_THIRD_PARTY | STDLIB:
            bad.append(f"line {line}: {name}")
    assert not bad, f"{core}.py must import only {sorted(CORE_THIRD_PARTY)}, the stdlib and its core siblings: {bad}"


def test_cli_modules_import_only_the_standard_library_at_module_level():
    """What `dseqjepa CMD --help` executes: module-level statements of the CLI package."""
    bad = []
    for path in sorted(PACKAGES["dseqjepa_cli"].glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module]  # relative: the CLI's own modules
            else:
                continue
            bad += [f"{path.name}:{node.lineno}: {name}" for name in names if name.split(".")[0] not in STDLIB | {"dseqjepa_options"}]
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


def test_import_dseqjepa_hub_leaves_image_processing_and_pipelines_unimported():
    """`import dseqjepa_hub` imports none of transformers' modelling, image-processing or pipeline
    modules (nor scipy, torchvision); once the user imports them, the package's classes are there."""
    script = (
        "import sys\n"
        "import dseqjepa_hub\n"
        "heavy = ('transformers.modeling_utils', 'transformers.models.auto.modeling_auto', 'transformers.pipelines',\n"
        "         'transformers.models.auto.image_processing_auto', 'transformers.image_processing_utils',\n"
        "         'dseqjepa_hub.modeling_dseqjepa', 'torchvision', 'scipy', 'cv2', 'timm')\n"
        "print('HEAVY', sorted(name for name in heavy if name in sys.modules))\n"
        "from transformers import AutoImageProcessor, AutoModel, pipeline\n"
        "from PIL import Image\n"
        "path = str(dseqjepa_hub.default_model_path())\n"
        "assert type(AutoModel.from_pretrained(path)) is dseqjepa_hub.DSeqJEPAModel\n"
        "assert type(AutoImageProcessor.from_pretrained(path)) is dseqjepa_hub.DSeqJEPAImageProcessor\n"
        "ranker = pipeline('saliency-ranking', model=path)\n"
        "assert type(ranker) is dseqjepa_hub.SaliencyRankingPipeline\n"
        "print('REGIONS', len(ranker(Image.new('RGB', (64, 48), 'gray'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout, done.stdout[-500:]
    assert "REGIONS" in done.stdout


def test_regions_and_embed_commands_leave_transformers_pipelines_unimported(tmp_path):
    """The folder jobs rank regions with `regions.rank_regions`: a one-image command does not pay for
    transformers' pipeline modules (nor the package's pipeline)."""
    from PIL import Image

    Image.new("RGB", (64, 48), "gray").save(tmp_path / "one.jpg")
    script = (
        "import sys\n"
        "from dseqjepa_cli import main\n"
        f"assert main(['regions', {str(tmp_path / 'one.jpg')!r}, '--out', {str(tmp_path / 'regions')!r}]) == 0\n"
        f"assert main(['embed', {str(tmp_path / 'one.jpg')!r}, '--out', {str(tmp_path / 'one.npy')!r}]) == 0\n"
        "heavy = ('transformers.pipelines', 'dseqjepa_hub.pipeline_saliency_ranking')\n"
        "print('HEAVY', sorted(name for name in heavy if name in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout, done.stdout[-500:]
    assert list((tmp_path / "regions").glob("one.regions.*")) and (tmp_path / "one.npy").is_file()


def test_modules_imported_before_transformers_auto_modules_register_their_classes():
    """The package's modules imported first (their own imports bring in the transformers module
    they register with, while they are still being imported) still end registered."""
    script = (
        "from dseqjepa_hub import DSeqJEPAModel, SaliencyRankingPipeline\n"
        "from transformers.models.auto.modeling_auto import MODEL_MAPPING\n"
        "from dseqjepa_hub import DSeqJEPAConfig\n"
        "assert MODEL_MAPPING[DSeqJEPAConfig] is DSeqJEPAModel\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "assert PIPELINE_REGISTRY.supported_tasks['saliency-ranking']['impl'] is SaliencyRankingPipeline\n"
        "from transformers import AutoImageProcessor\n"
        "from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAImageProcessor\n"
        "from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING\n"
        "assert IMAGE_PROCESSOR_MAPPING[DSeqJEPAConfig]['torchvision'] is DSeqJEPAImageProcessor\n"
        "print('OK')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "OK" in done.stdout


def error_classes() -> dict[str, str]:
    """Every subclass of DSeqJEPAError defined in the packages -> its module."""
    import importlib

    from dseqjepa_hub.errors import DSeqJEPAError

    for module in MODULES:
        if not module.endswith("__main__"):
            importlib.import_module(module)
    found, pending = {}, [DSeqJEPAError]
    while pending:
        for subclass in pending.pop().__subclasses__():
            if subclass.__module__.split(".")[0] in PACKAGES:
                found[subclass.__name__] = subclass.__module__
                pending.append(subclass)
    return found


def test_the_document_lists_every_error_class_where_it_is_defined():
    block = re.search(r"```errors\n(.*?)```", ARCHITECTURE.read_text(), re.S)
    assert block, "docs/ARCHITECTURE.md has no ```errors block"
    documented = {}
    for line in filter(str.strip, block.group(1).splitlines()):
        match = re.fullmatch(r"(\w+) \(([\w.]+)\): .+", line.strip())
        assert match, f"an errors line reads `Name (module): when it is raised`, found {line!r}"
        documented[match.group(1)] = match.group(2)
    assert documented == error_classes()
