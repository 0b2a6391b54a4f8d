"""The browser demo: its function, the served app through gradio_client, a headless Chromium that uploads an
image and takes a screenshot (skipped where Chromium is not installed), and the Space `push --space` stages."""

import importlib.util
import os
import runpy
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import SpaceCard
from PIL import Image

from dseqjepa_hub import SaliencyRankingPipeline, default_model_path
from dseqjepa_hub.application.loading import load_model

gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "images" / "chelsea.jpg"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo with the bundled model, served on a free local port for the module's tests."""
    patch = pytest.MonkeyPatch()
    patch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.mktemp("gradio")))
    patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from dseqjepa_hub.application.demo import build_demo, launch

    demo = build_demo()
    _, url, _ = launch(demo, port=free_port(), block=False, quiet=True)
    yield url
    demo.close()
    patch.undo()


def expected_outputs():
    from dseqjepa_hub.application.demo import analyze

    loaded = load_model()
    return analyze(loaded.model, loaded.processor, Image.open(EXAMPLE), 5, 0.1)


def test_analyze_gives_the_pipelines_regions():
    overlay, saliency, sequence, table = expected_outputs()
    image = Image.open(EXAMPLE)
    loaded = load_model()
    regions = SaliencyRankingPipeline(model=loaded.model, image_processor=loaded.processor)(
        image, min_region_fraction=0.1, num_regions=5
    )
    assert overlay.size == image.size and saliency.width > image.width and sequence.width > image.width // 2
    assert [row[0] for row in table] == [region["rank"] for region in regions]
    assert [row[1] for row in table] == [("background" if r["is_background"] else f"R{r['rank']}") for r in regions]
    assert [row[2] for row in table] == [round(region["score"], 4) for region in regions]
    assert [row[4] for row in table] == [str(region["box"]) for region in regions]
    from dseqjepa_hub.application.demo import DemoError, analyze

    with pytest.raises(DemoError, match="upload an image"):
        analyze(loaded.model, loaded.processor, None)


def test_the_served_app_through_gradio_client(served):
    from gradio_client import Client, handle_file

    client = Client(served, verbose=False)
    overlay, saliency, sequence, table = client.predict(handle_file(str(EXAMPLE)), 5, 0.1, api_name="/analyze")
    want_overlay, want_saliency, want_sequence, want_table = expected_outputs()
    for path, wanted in ((overlay, want_overlay), (saliency, want_saliency), (sequence, want_sequence)):
        with Image.open(path) as shown:
            assert shown.size == wanted.size
            assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(wanted))  # PNG: lossless
    assert table["headers"] == ["rank", "region", "score", "area %", "box [x0, y0, x1, y1]"]
    assert table["data"] == want_table


def test_a_bad_upload_is_a_readable_error_through_the_api(served, tmp_path):
    """A file that is not an image, sent as the API sends uploads: the decoder's one-line reason reaches the
    client (and so the page), not an opaque AppError."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a JPEG")
    client = Client(served, verbose=False)
    with pytest.raises(AppError) as error:
        client.predict(handle_file(str(fake)), 5, 0.1, api_name="/analyze")
    message = str(error.value)
    assert message == "holiday.jpg: not an image file that Pillow can read", message
    assert not list((REPO / "dseqjepa_hub").rglob("*.pyi"))  # Gradio writes stubs beside component subclasses


def load_screenshot_script():
    spec = importlib.util.spec_from_file_location("demo_screenshot", REPO / "benchmarks" / "demo_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_screenshot"] = module
    spec.loader.exec_module(module)
    return module


def test_headless_chromium_uploads_an_image_and_takes_a_screenshot(served, tmp_path):
    script = load_screenshot_script()
    if script.find_chromium() is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); "
                    "benchmarks/demo_screenshot.py runs this check by hand")
    shot = tmp_path / "demo.png"
    shown = script.capture(served, shot)
    loaded = load_model()  # the page's defaults are the model's: 5 regions, fraction 0.15
    from dseqjepa_hub.application.demo import analyze

    overlay, saliency, sequence, table = analyze(loaded.model, loaded.processor, Image.open(EXAMPLE),
                                                 loaded.model.config.num_regions, loaded.model.config.min_region_fraction)
    assert shown["images"] == [list(overlay.size), list(saliency.size), list(sequence.size)]
    assert shown["covered"] == []  # no title or colour-bar value under the panel's label or buttons
    cells = shown["table"]
    for row in table:
        assert [str(value) for value in row] == cells[cells.index(row[1]) - 1 : cells.index(row[1]) + 4]
    with Image.open(shot) as screenshot:
        assert screenshot.width >= 1200 and screenshot.height >= 700
        pixels = np.asarray(screenshot.convert("RGB")).astype(int)
    assert (np.abs(pixels - 255).sum(axis=2) > 60).mean() > 0.2  # not a blank page: images are drawn


def test_stage_space_writes_an_app_for_the_pushed_model(tmp_path, monkeypatch):
    from dseqjepa_hub.application import demo
    from dseqjepa_hub.application.space import SpaceError, stage_space

    names = stage_space("me/tiny-dseqjepa", tmp_path / "space", license="apache-2.0")
    assert {"app.py", "requirements.txt", "README.md", "examples/chelsea.jpg", "examples/LICENSES.md"} <= set(names)
    card = SpaceCard.load(tmp_path / "space" / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.models == ["me/tiny-dseqjepa"]
    assert card.data.sdk_version == gr.__version__ and card.data.license == "apache-2.0"
    requirements = (tmp_path / "space" / "requirements.txt").read_text().split()
    assert "gradio<7,>=6" in requirements and not [line for line in requirements if line.startswith("dseqjepa")]
    # app.py builds the demo on the pushed model: here the repo id resolves to the bundled model.
    asked = []

    def offline_load_model(model=None, device="cpu"):
        asked.append(model)
        return load_model(None, device)

    monkeypatch.setattr(demo, "load_model", offline_load_model)
    namespace = runpy.run_path(str(tmp_path / "space" / "app.py"))
    assert asked == ["me/tiny-dseqjepa"] and isinstance(namespace["demo"], gr.Blocks)
    namespace["demo"].close()
    with pytest.raises(SpaceError, match="model repo id"):
        stage_space("not a repo id", tmp_path / "other")
    from dseqjepa_hub.application.atomic import FolderNotEmptyError

    with pytest.raises(FolderNotEmptyError):
        stage_space("me/tiny-dseqjepa", tmp_path / "space")


def test_the_staged_space_runs_from_its_own_source_without_the_package_installed(tmp_path):
    """As the Space's build does: its requirements.txt (every one installed here, none this package) and
    app.py run from the Space folder, in a process that cannot import the installed package; the model comes
    from an HF cache offline."""
    import subprocess
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from test_hub import fill_cache

    from dseqjepa_hub.application.space import stage_space

    stage_space("me/tiny-dseqjepa", tmp_path / "space")
    for line in (tmp_path / "space" / "requirements.txt").read_text().split():
        requirement = Requirement(line)
        assert requirement.specifier.contains(version(requirement.name), prereleases=True), line
    fill_cache(default_model_path(), tmp_path / "hub", "me/tiny-dseqjepa")
    script = (
        "import sys\n"
        "sys.meta_path[:] = [finder for finder in sys.meta_path if 'editable' not in repr(finder)]\n"
        "sys.path[:] = [path for path in sys.path if 'dseqjepa' not in path]\n"
        "import runpy\n"
        "namespace = runpy.run_path('app.py')\n"
        "import dseqjepa_hub\n"
        "print('FILE', dseqjepa_hub.__file__)\n"
        "print('DEMO', type(namespace['demo']).__name__)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "PYTHONPATH": "",
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path / "space", env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("FILE", "DEMO")))
    assert lines["FILE"] == str(tmp_path / "space" / "dseqjepa_hub" / "__init__.py")
    assert lines["DEMO"] == "Blocks"
    assert not (tmp_path / "space" / "dseqjepa_hub" / "default_model").exists()


def test_push_space_stages_the_space_beside_the_model(tmp_path, capsys):
    from dseqjepa_cli import main

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    argv = ["push", str(default_model_path()), "--repo-id", "me/tiny-dseqjepa", "--dry-run", "--license", "apache-2.0"]
    assert main([*argv, "--stage-dir", str(tmp_path / "staged"), "--space", str(tmp_path / "busy")]) == 1
    assert "busy exists and is not an empty folder" in capsys.readouterr().err
    assert not (tmp_path / "staged").exists()  # refused before anything was staged
    assert main([*argv, "--stage-dir", str(tmp_path / "staged"), "--space", str(tmp_path / "space")]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "staged" / "config.json").is_file() and (tmp_path / "space" / "app.py").is_file()
    assert f"upload it with: hf upload me/tiny-dseqjepa-demo {tmp_path / 'space'} --repo-type space" in printed
