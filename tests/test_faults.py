"""Hostile and damaged inputs end in one line naming the file and the problem, never a
traceback and never a result computed from garbage (docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dseqjepa_cli import main
from dseqjepa_hub import default_model_path
from dseqjepa_hub.errors import DSeqJEPAError

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "examples/images/coffee.jpg"


class ExecutesCode:
    """A pickle that would run a shell command if unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def model_copy(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(default_model_path(), folder)
    return folder


def damage(folder: Path, kind: str, tmp_path: Path) -> None:
    weights = folder / "model.safetensors"
    if kind == "hostile pickle":
        weights.unlink()
        torch.save({"blocks.0.norm1.weight": ExecutesCode(tmp_path / "executed")}, folder / "pytorch_model.bin")
    elif kind == "garbage header":
        weights.write_bytes(b"\xff" * 8 + b"not a header" * 4)
    elif kind == "huge header length":
        weights.write_bytes((10**15).to_bytes(8, "little") + b"{}")
    elif kind == "shapes disagree with config":
        config = json.loads((folder / "config.json").read_text())
        config["intermediate_size"] *= 2
        (folder / "config.json").write_text(json.dumps(config))
    elif kind == "NaN layer_norm_eps":
        config = json.loads((folder / "config.json").read_text())
        config["layer_norm_eps"] = float("nan")
        (folder / "config.json").write_text(json.dumps(config))
    elif kind == "NaN weights":
        tensors = {name: torch.full_like(t, float("nan")) for name, t in load_file(weights).items()}
        save_file(tensors, weights, metadata={"format": "pt"})
    else:
        raise AssertionError(kind)


EXPECTED = {
    "hostile pickle": "pytorch_model.bin: holds objects other than tensors and was refused",
    "garbage header": "model.safetensors: not a readable safetensors file",
    "huge header length": "model.safetensors: not a readable safetensors file",
    "shapes disagree with config": "model.safetensors: the weights do not match config.json: blocks.0.mlp.fc1.weight",
    "NaN layer_norm_eps": "layer_norm_eps",
    "NaN weights": "gives non-finite",
}


@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("command", ["regions", "embed"])
def test_damaged_model_folder_is_one_clear_line(tmp_path, capsys, kind, command):
    folder = model_copy(tmp_path, "model")
    damage(folder, kind, tmp_path)
    out = tmp_path / ("out" if command == "regions" else "emb.safetensors")
    capsys.readouterr()
    code = main([command, str(IMAGE), "--model", str(folder), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"dseqjepa {command}: error: " in err and EXPECTED[kind] in err, err[-2000:]
    assert "Traceback" not in err and "LOAD REPORT" not in err
    assert not (tmp_path / "executed").exists()  # the pickle's code never ran
    assert not out.exists() or not any(out.iterdir())  # no result from garbage


@pytest.mark.parametrize("kind", list(EXPECTED)[:4])
def test_damaged_model_folder_in_export_timm_is_one_clear_line(tmp_path, capsys, kind):
    folder = model_copy(tmp_path, "model")
    damage(folder, kind, tmp_path)
    code = main(["export", "timm", str(folder), "--out", str(tmp_path / "timm")])
    err = capsys.readouterr().err
    assert code == 1 and f"dseqjepa export: error: {folder}" in err and EXPECTED[kind] in err and "Traceback" not in err
    assert not (tmp_path / "executed").exists() and not (tmp_path / "timm").exists()


def test_intact_copy_still_works(tmp_path, capsys):
    """The fault tests above mean something only if an undamaged copy passes the same way."""
    folder = model_copy(tmp_path, "model")
    assert main(["regions", str(IMAGE), "--model", str(folder), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out/coffee.regions.jpg").is_file()


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def training_images(tmp_path_factory) -> Path:
    from PIL import Image, ImageDraw

    root = tmp_path_factory.mktemp("train-images")
    rng = np.random.default_rng(0)
    for i in range(8):
        image = Image.new("RGB", (72, 72), tuple(int(v) for v in rng.integers(0, 255, 3)))
        x, y = (int(v) for v in rng.integers(0, 40, 2))
        ImageDraw.Draw(image).ellipse([x, y, x + 30, y + 30], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        image.save(root / f"{i}.png")
    return root


def train_cli(images: Path, output: Path, *settings: str, resume: bool = False) -> int:
    argv = ["train", "--config", "tiny-cpu", "--data", str(images), "--output", str(output), "--max-steps", "4",
            "--set", "checkpoint_every=1", "--set", "grad_clip=null"]
    for setting in settings:
        argv += ["--set", setting]
    return main(argv + (["--resume"] if resume else []))


@pytest.mark.parametrize("setting", ["lr=inf", "start_lr=-inf", "ema_start=nan", "lr=-1"])
def test_non_finite_or_negative_settings_are_refused_at_load(training_images, tmp_path, capsys, setting):
    assert train_cli(training_images, tmp_path / "run", setting) == 1
    err = capsys.readouterr().err
    assert f"with --set checkpoint_every=1 grad_clip=null {setting}: {setting.split('=')[0]}: expected" in err
    assert err.startswith("dseqjepa train: error: ") and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("lr", ["1e4", "1e30"])
def test_a_diverging_run_names_only_a_checkpoint_with_finite_weights(training_images, tmp_path, capsys, lr):
    torch.set_num_threads(1)
    code = train_cli(training_images, tmp_path, f"lr={lr}", f"start_lr={lr}", "warmup_epochs=0")
    err = capsys.readouterr().err
    assert code == 1 and "dseqjepa train: error: " in err and "not finite" in err, err[-1500:]
    named = err.split("The last good checkpoint (finite weights) is ")[1].split()[0].rstrip(".")
    checkpoints = sorted((tmp_path / "checkpoints").glob("step_*"))
    if named.startswith("none"):
        assert not checkpoints
    else:
        assert Path(named) == checkpoints[-1]
    for checkpoint in checkpoints:  # every checkpoint on disk, the named one included, is finite
        for file in checkpoint.glob("*/model.safetensors"):
            assert all(bool(t.isfinite().all()) for t in load_file(file).values()), file
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        assert all(np.isfinite(v) for v in json.loads(line).values() if isinstance(v, float)), line


def test_resuming_a_complete_run_changes_nothing(training_images, tmp_path, capsys):
    torch.set_num_threads(1)
    assert train_cli(training_images, tmp_path, "keep_checkpoints=0") == 0
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    capsys.readouterr()
    assert train_cli(training_images, tmp_path, "keep_checkpoints=0", resume=True) == 0
    assert "already complete at step 4" in capsys.readouterr().out
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize("kind", ["hostile trainer_state.pt", "garbage safetensors header", "huge header length"])
def test_resume_skips_a_damaged_newest_checkpoint_and_names_it(training_images, tmp_path, capsys, caplog, kind):
    torch.set_num_threads(1)
    assert train_cli(training_images, tmp_path, "keep_checkpoints=0") == 0  # checkpoints at steps 1..4
    reference = {k: v.clone() for k, v in load_file(tmp_path / "checkpoints/step_000004/context_encoder/model.safetensors").items()}  # no mmap: the file is overwritten below
    newest = tmp_path / "checkpoints/step_000004"
    if kind == "hostile trainer_state.pt":
        torch.save({"step": ExecutesCode(tmp_path / "executed")}, newest / "trainer_state.pt")
        damaged = newest / "trainer_state.pt"
    else:
        damaged = newest / "context_encoder/model.safetensors"
        header = b"\xff" * 8 if kind == "garbage safetensors header" else (10**15).to_bytes(8, "little")
        damaged.write_bytes(header + b"{}")
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines()[3:]:
        assert json.loads(line)["step"] == 4
    capsys.readouterr()
    assert train_cli(training_images, tmp_path, "keep_checkpoints=0", resume=True) == 0
    assert not (tmp_path / "executed").exists()
    assert "checkpoint step_000004 is damaged" in caplog.text and str(damaged) in caplog.text
    assert "resuming from" in caplog.text and "step_000003" in caplog.text
    # Step 4 was trained again from step 3 and gives the same weights as the first time (exact resume).
    again = load_file(tmp_path / "checkpoints/step_000004/context_encoder/model.safetensors")
    assert all(torch.equal(again[name], reference[name]) for name in reference)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs: a full disk on demand (skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def read_only(mount: Path) -> None:
    import subprocess

    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)


@needs_root
def test_regions_on_a_full_disk_is_one_line_and_leaves_no_temporary(small_disk, tmp_path, capsys):
    (small_disk / "filler").write_bytes(b"\0" * (1536 * 1024 - 64 * 1024))  # 64 KB left: less than one overlay
    code = main(["regions", str(REPO / "examples/images"), "--out", str(small_disk / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "dseqjepa regions: error: " in err and "No space left on device" in err, err[-1500:]
    assert "Traceback" not in err and str(small_disk / "out") in err
    leftovers = [p for p in (small_disk / "out").rglob("*") if p.name.startswith(".")]
    assert leftovers == []


@needs_root
def test_regions_to_a_read_only_folder_is_one_line(small_disk, capsys):
    read_only(small_disk)
    code = main(["regions", str(IMAGE), "--out", str(small_disk / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "Read-only file system" in err and str(small_disk / "out") in err and "Traceback" not in err


@needs_root
def test_training_on_a_full_disk_is_one_line_and_keeps_earlier_checkpoints(training_images, small_disk, capsys):
    torch.set_num_threads(1)
    code = train_cli(training_images, small_disk / "run", "keep_checkpoints=0")
    err = capsys.readouterr().err
    assert code == 1 and "dseqjepa train: error: " in err and "Traceback" not in err, err[-1500:]
    assert "cannot write" in err and str(small_disk / "run") in err
    checkpoints = small_disk / "run/checkpoints"
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")] if checkpoints.exists() else True


def test_stale_temporaries_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    import subprocess

    from dseqjepa_hub.application.atomic import remove_stale_temporaries

    dead = subprocess.Popen(["true"])  # a process id that no longer runs
    dead.wait()
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    stale_file = out / "sub" / f".cat.regions.png.tmp-{dead.pid}"
    stale_folder = out / f".model.partial-{dead.pid}-abc123"
    live_file = out / f".dog.regions.png.tmp-{os.getpid()}"
    keep = [out / "sub/cat.regions.png", out / ".hidden-notes.txt", live_file]
    for path in (stale_file, live_file, *keep[:2]):
        path.write_bytes(b"x")
    stale_folder.mkdir()
    (stale_folder / "model.safetensors").write_bytes(b"x")
    removed = remove_stale_temporaries(out, recursive=True)
    assert sorted(removed) == sorted([stale_file, stale_folder])
    assert all(path.exists() for path in keep) and not stale_file.exists() and not stale_folder.exists()


def test_every_writer_clears_what_killed_writers_of_its_destination_left(tmp_path):
    """Hub staging, Spaces, timm exports, converted folders: whatever writes through the atomic
    module removes the stale temporaries of its own destination before it starts, and only those."""
    import subprocess

    from dseqjepa_hub.application.atomic import atomic_directory, atomic_write_text

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale_folder = tmp_path / f".staged.partial-{dead.pid}-abc123"
    stale_previous = tmp_path / f".staged.partial-{dead.pid}-abc123-previous"
    stale_file = tmp_path / f".card.md.tmp-{dead.pid}"
    other = tmp_path / f".other.partial-{dead.pid}-xyz"  # another destination's: not this writer's business
    live = tmp_path / f".staged.partial-{os.getpid()}-live"
    for folder in (stale_folder, stale_previous, other, live):
        folder.mkdir()
    stale_file.write_text("x")
    with atomic_directory(tmp_path / "staged") as folder:
        (folder / "config.json").write_text("{}")
    atomic_write_text(tmp_path / "card.md", "card")
    assert not stale_folder.exists() and not stale_previous.exists() and not stale_file.exists()
    assert other.exists() and live.exists()
    assert (tmp_path / "staged/config.json").is_file() and (tmp_path / "card.md").read_text() == "card"


def test_a_killed_regions_run_leaves_nothing_that_the_next_run_keeps(tmp_path, capsys):
    import subprocess

    out = tmp_path / "out"
    dead = subprocess.Popen(["true"])
    dead.wait()
    out.mkdir()
    (out / f".coffee.regions.png.tmp-{dead.pid}").write_bytes(b"half an overlay")
    assert main(["regions", str(IMAGE), "--out", str(out), "--skip-existing"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["coffee.regions.jpg"]


def test_folder_jobs_clear_their_folder_once_instead_of_listing_it_for_every_file(tmp_path, monkeypatch):
    """A listing of the output folder per written file grows with the folder (4 ms a file among 5,000):
    `regions` and `visualize` clear the stale temporaries of their whole folder when they start and write
    each image's files without listing it again (visualize lists it once more for its index)."""
    from dseqjepa_hub.application import atomic

    listed, original = [], atomic._remove_stale_temporaries_of
    monkeypatch.setattr(atomic, "_remove_stale_temporaries_of", lambda path: listed.append(path) or original(path))
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(IMAGE, folder / f"{name}.jpg")
    assert main(["regions", str(folder), "--out", str(tmp_path / "regions"), "--json"]) == 0
    assert len(list((tmp_path / "regions").iterdir())) == 6 and listed == []
    assert main(["visualize", str(folder), "--out", str(tmp_path / "pictures"), "--kind", "saliency"]) == 0
    assert [path.suffix for path in listed] == [".json"]


# ----------------------------------------------------------------------------- kills and concurrency


def test_runs_killed_at_random_points_resume_bit_identical(training_images, tmp_path):
    """SIGKILL at seeded random moments (mid-step, mid-checkpoint), resume until done: the final
    weights equal an uninterrupted run's, bit for bit."""
    import random
    import signal
    import subprocess
    import sys
    import time

    def command(output: Path, resume: bool) -> list[str]:
        return [sys.executable, "-m", "dseqjepa_cli", "train", "--config", "tiny-cpu", "--data", str(training_images),
                "--output", str(output), "--set", "checkpoint_every=1", "--set", "keep_checkpoints=0",
                *(["--resume"] if resume else [])]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    subprocess.run(command(reference, False), env=env, check=True, capture_output=True, timeout=300)

    rng = random.Random(0)
    run, kills = tmp_path / "killed", 0
    for target_lines in (1, 2, 3):  # kill soon after step 1, 2 and 3 are logged: mid-checkpoint or mid-step
        process = subprocess.Popen(command(run, kills > 0), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        metrics = run / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= target_lines:
                time.sleep(rng.uniform(0.0, 0.05))
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        returncode = process.wait(timeout=300)
        assert returncode in (0, -signal.SIGKILL), process.stderr.read().decode()[-2000:]
        kills += returncode == -signal.SIGKILL
    subprocess.run(command(run, True), env=env, check=True, capture_output=True, timeout=300)
    assert kills >= 2
    for name in ("context_encoder", "target_encoder", "predictor"):
        got = load_file(run / "checkpoints/step_000004" / name / "model.safetensors")
        want = load_file(reference / "checkpoints/step_000004" / name / "model.safetensors")
        assert all(torch.equal(got[key], want[key]) for key in want), name
    assert [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [
        json.loads(line)["loss"] for line in (reference / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_writing_one_output_folder(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    from dseqjepa_hub.application.region_json import regions_from_json

    out = tmp_path / "out"
    command = [sys.executable, "-m", "dseqjepa_cli", "regions", str(REPO / "examples/images"), "--out", str(out), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-2000:]
    names = sorted(p.name for p in out.iterdir())
    stems = sorted(p.stem for p in (REPO / "examples/images").glob("*.jpg"))
    assert names == sorted(f"{stem}.regions.{ext}" for stem in stems for ext in ("json", "jpg"))
    for stem in stems:
        Image.open(out / f"{stem}.regions.jpg").load()  # complete files, whoever wrote them last
        assert regions_from_json(json.loads((out / f"{stem}.regions.json").read_text())["regions"])


@pytest.mark.parametrize("name", ["/nonexistent/model", "./typo-model", "~/no/such/model", "runs/models/typo"])
def test_a_missing_local_model_path_fails_at_once_without_the_hub(tmp_path, capsys, monkeypatch, name):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("went to the Hub"))
    monkeypatch.chdir(tmp_path)
    assert main(["regions", str(IMAGE), "--model", name, "--out", str(tmp_path / "out")]) == 1
    assert f"dseqjepa regions: error: {name}: no such model folder" in capsys.readouterr().err


def test_a_misspelled_default_model_is_named_not_looked_up(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("went to the Hub"))
    monkeypatch.chdir(tmp_path)
    assert main(["regions", str(IMAGE), "--model", "defualt", "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == ("dseqjepa regions: error: defualt: no such model folder; did you mean 'default', "
                                       "the bundled model?\n")


def test_a_model_or_run_folder_among_the_images_is_refused_with_how_to_pass_it(tmp_path, capsys):
    """A training run given where images go (the README once did it) would be walked as an empty image folder."""
    run = tmp_path / "my_run"
    (run / "checkpoints").mkdir(parents=True)
    (tmp_path / "images").mkdir()
    shutil.copy(IMAGE, tmp_path / "images" / IMAGE.name)
    for inputs in ([str(run), str(tmp_path / "images")], [str(run)]):
        assert main(["regions", *inputs, "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"pass it as --model {run}" in err, err
    assert not (tmp_path / "out").exists()
    (tmp_path / "no_images").mkdir()
    assert main(["regions", str(tmp_path / "images"), str(tmp_path / "no_images"), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"dseqjepa regions: error: {tmp_path / 'no_images'}: no image files in this folder\n"


# ----------------------------------------------------------------------------- the corpus


def test_corpus_through_the_cli_and_the_pipeline_gives_the_same_answers(tmp_path, capsys):
    """Every file of the corpus ends as an output, a named failure or a named skip, the same in
    `dseqjepa regions` and in `pipeline("saliency-ranking")` given the path; no traceback."""
    from fault_corpus import make_corpus

    from dseqjepa_hub import SaliencyRankingPipeline
    from dseqjepa_hub.application.loading import load_model
    from dseqjepa_hub.application.region_json import regions_from_json
    from dseqjepa_hub.image_io import ImageLoadError

    corpus = tmp_path / "corpus"
    expected = make_corpus(corpus)
    out = tmp_path / "out"
    assert main(["regions", str(corpus), "--out", str(out), "--json"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = {line.strip().split(": ", 1)[0]: line for line in err.splitlines() if line.startswith("  ")}
    for name, (kind, reason) in expected.items():
        if kind != "good":
            assert reason in lines[str(corpus / name)], (name, lines.get(str(corpus / name)))
    written = {path.name for path in out.iterdir()}
    stems = {Path(name).with_suffix("").name for name, (kind, _) in expected.items() if kind == "good"}
    assert written == {f"{stem}.regions.{ext}" for stem in stems for ext in ("jpg", "json")}

    loaded = load_model()
    pipe = SaliencyRankingPipeline(model=loaded.model, image_processor=loaded.processor, device="cpu")
    for name, (kind, reason) in expected.items():
        if kind == "skipped":
            continue
        if kind == "bad":
            with pytest.raises(ImageLoadError, match=re.escape(reason)) as raised:
                pipe(str(corpus / name))
            assert raised.value.path == corpus / name
            continue
        record = json.loads((out / f"{Path(name).with_suffix('').name}.regions.json").read_text())
        from_cli = regions_from_json(record["regions"])
        from_pipeline = pipe(str(corpus / name))
        assert [r["rank"] for r in from_pipeline] == [r["rank"] for r in from_cli], name
        for got, want in zip(from_pipeline, from_cli):
            assert np.array_equal(got["mask"], want["mask"]) and got["box"] == want["box"], name


@pytest.mark.parametrize("kind", [kind for kind in EXPECTED if kind != "NaN weights"])  # found before any image runs
def test_a_damaged_folder_is_the_same_line_in_every_command(tmp_path, capsys, kind):
    """One loader: every command that loads a model, and torch.hub, refuse the folder with the same line."""
    folder = model_copy(tmp_path, "model")
    damage(folder, kind, tmp_path)
    (tmp_path / "data/train").mkdir(parents=True)
    (tmp_path / "data/val").mkdir()
    out = tmp_path / "out"
    commands = {
        "regions": ["regions", str(IMAGE), "--model", str(folder), "--out", str(out / "regions")],
        "embed": ["embed", str(IMAGE), "--model", str(folder), "--out", str(out / "emb.safetensors")],
        "visualize": ["visualize", str(IMAGE), "--kind", "saliency", "--model", str(folder), "--out", str(out / "vis")],
        "eval": ["eval", str(folder), "--data", str(tmp_path / "data"), "--task", "knn", "--device", "cpu"],
        "export": ["export", "timm", str(folder), "--out", str(out / "timm")],
        "export onnx": ["export", "onnx", str(folder), "--out", str(out / "model.onnx")],
        "push": ["push", str(folder), "--repo-id", "org/name", "--dry-run", "--stage-dir", str(out / "stage"),
                 "--license", "apache-2.0"],
    }
    messages = {}
    capsys.readouterr()
    for name, argv in commands.items():
        assert main(argv) == 1, name
        lines = capsys.readouterr().err.strip().splitlines()
        prefix = f"dseqjepa {argv[0]}: error: "
        assert len(lines) == 1 and lines[0].startswith(prefix), (name, lines[-5:])
        messages[name] = lines[0][len(prefix):]
    with pytest.raises(DSeqJEPAError) as raised:
        torch.hub.load(str(REPO), "dseqjepa_vit_tiny_patch16_224", source="local", weights=str(folder))
    messages["torch.hub"] = str(raised.value)
    assert len(set(messages.values())) == 1, messages
    assert EXPECTED[kind] in messages["push"]
    assert not (tmp_path / "executed").exists()  # the pickle's code never ran
    assert not out.exists() or not any(out.rglob("*.*"))  # nothing written


def test_training_on_a_folder_with_no_readable_image_is_one_line(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    for index in range(8):
        (tmp_path / "images" / f"{index}.jpg").write_bytes(b"not an image")
    assert train_cli(tmp_path / "images", tmp_path / "run") == 1
    err = capsys.readouterr().err
    assert "dseqjepa train: error: " in err and "could be read" in err and "Traceback" not in err
    assert train_cli(tmp_path / "images", tmp_path / "run2", "batch_size=16") == 1  # fewer images than a batch
    err = capsys.readouterr().err
    assert "dseqjepa train: error: " in err and "fewer than batch_size 16" in err and "Traceback" not in err
