"""README.md runs as written: every ```bash and ```python block, top to bottom, in one working folder
laid out as a reader's checkout (examples/, hubconf.py, the packages, `.venv` = this environment), so
that what one block writes (finetuned/, dseqjepa.onnx) feeds the next, as in the README. Offline
(HF_HUB_OFFLINE=1): nothing the README shows may need a download.

Three kinds of command are checked rather than run, each for a stated reason:
- making the environment (`python3 -m venv .venv`, `pip install -e ".[EXTRAS]"`): this test runs inside
  the environment they make; each extra they name must exist in pyproject.toml and be installed here;
- the test suite (`python -m pytest`): it is what runs this test; it must be .ci/run's command, verbatim;
- `dseqjepa demo --port P`: it serves until stopped; it must answer on P, then it is stopped.
Blocks without a language (the output formats) are documentation, not commands.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", flags=re.S | re.M)
CHECKOUT = ("examples", "hubconf.py", "dseqjepa_hub", "dseqjepa_options.py", "pyproject.toml", ".ci")


def readme_blocks() -> list[tuple[int, str, str]]:
    """(line number, language, code) of every code block, in order."""
    text = (REPO / "README.md").read_text()
    return [(text[: match.start()].count("\n") + 1, match.group(1), match.group(2)) for match in BLOCK.finditer(text)]


def check_install(command: str) -> bool:
    """True for an environment-making command, after checking what it names is installed here (never run:
    it would change this environment)."""
    command = command.split("#")[0].strip()
    if re.fullmatch(r"python3 -m venv \.venv", command):
        return True
    if not re.search(r"\bpip\b|-m venv\b", command):
        return False
    install = re.fullmatch(r"(?:\.venv/bin/)?pip install(?: -q)? -e (\S+)", command)
    assert install, f"{command}: an environment command this test does not know (it runs none)"
    target = install.group(1).strip("\"'")
    extras = re.fullmatch(r"\.(?:\[([\w,]+)\])?", target)
    assert extras, f"{command}: expected `pip install -e .` or `-e \".[EXTRAS]\"`"
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = set((extras.group(1) or "").split(",")) - {""}
    while wanted & declared.keys():  # extras of extras: "dseqjepa-hub[trainer,onnx,demo]"
        name = (wanted & declared.keys()).pop()
        wanted.discard(name)
        for line in declared[name]:
            requirement = Requirement(line)
            if requirement.name == "dseqjepa-hub":
                wanted |= requirement.extras
                continue
            try:
                installed = distribution(requirement.name).version
            except PackageNotFoundError:
                pytest.fail(f"{command}: the extra {name!r} needs {requirement}, which is not installed")
            assert requirement.specifier.contains(installed, prereleases=True), f"{command}: {requirement}, found {installed}"
    assert not wanted, f"{command}: no such extra in pyproject.toml: {sorted(wanted)}"
    return True


def check_test_suite(line: str) -> bool:
    """True for the line that runs the tests, after checking it is .ci/run's line, whole and verbatim."""
    line = line.split("#")[0].strip()
    if "pytest" not in line:
        return False
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert line in ci, f"{line}: not .ci/run's test command (the README's set-up line and CI's are one)"
    return True


def serve_demo(command: str, folder: Path, env: dict) -> bool:
    demo = re.fullmatch(r"dseqjepa demo --port (\d+)(.*)", command.split("#")[0].strip())
    if not demo:
        return False
    server = subprocess.Popen(["bash", "-c", command], cwd=folder, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, f"{command} ended: {server.stdout.read()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{demo.group(1)}/", timeout=5) as page:
                    assert page.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, f"{command}: nothing answered on port {demo.group(1)}"
                time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    return True


def run(command: list[str], folder: Path, env: dict, where: str) -> None:
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README.md {where} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def test_the_readme_runs_top_to_bottom_as_written(tmp_path):
    folder = tmp_path / "checkout"
    folder.mkdir()
    for name in CHECKOUT:
        (folder / name).symlink_to(REPO / name)
    (folder / ".venv").symlink_to(Path(sys.prefix))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    blocks = readme_blocks()
    assert [language for _, language, _ in blocks].count("python") >= 4
    for line, language, code in blocks:
        if language == "python":
            script = folder / f"readme_line_{line}.py"
            script.write_text(code)
            run([sys.executable, script.name], folder, env, f"line {line} (python)")
            continue
        for offset, text in enumerate(re.sub(r"\\\n\s*", " ", code).splitlines()):  # a continued line: one command
            if check_test_suite(text):
                continue
            commands = [part.strip() for part in text.split(" && ")] if " && " in text else [text]
            for command in commands:
                if not command or command.startswith("#"):
                    continue
                if check_install(command) or serve_demo(command, folder, env):
                    continue
                run(["bash", "-e", "-o", "pipefail", "-c", command], folder, env, f"line {line + 1 + offset}: {command}")
    for written in ("regions_out", "vis", "dseqjepa.onnx", "finetuned", "staged", "finetuned-timm", "timm-320",
                    "emb.safetensors", "shards.index.json", "my_run_regions"):
        assert (folder / written).exists(), f"the README's {written} was not written"
    written = [path.name + ("/" if path.is_dir() else "") for path in folder.iterdir()
               if path.name not in CHECKOUT and path.name != ".venv" and not path.name.startswith("readme_line_")]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=REPO, capture_output=True, text=True)
    assert sorted(ignored.stdout.split()) == sorted(written), "outputs of the README that git does not ignore"
