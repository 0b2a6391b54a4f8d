"""Folders through `dseqjepa regions` and `dseqjepa embed`: decoding in DataLoader workers,
writing in threads (dseqjepa_hub/application/runner.py, which every batched job runs through), and
what the commands say and write: the
same outputs with and without workers and as the pipeline, no-foreground images, skipped
counts, --pool, no readable image, file modes under the umask, errors in writer threads and
non-finite batches. A tiny random model and small synthetic photos keep it fast."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dseqjepa_cli import main
from dseqjepa_hub import (
    DSeqJEPAConfig,
    DSeqJEPAImageProcessor,
    DSeqJEPAModel,
    SaliencyRankingPipeline,
)
from dseqjepa_hub.application import regions_job, runner
from dseqjepa_hub.application.atomic import atomic_directory
from dseqjepa_hub.application.drawing import readable
from dseqjepa_hub.application.embed_job import NoImagesEmbeddedError, embed_files, write_embeddings
from dseqjepa_hub.application.region_json import regions_from_json
from dseqjepa_hub.errors import NonFiniteOutputError
from dseqjepa_hub.image_io import load_image
from dseqjepa_hub.pipeline_saliency_ranking import save_pretrained_with_pipeline
from dseqjepa_hub.regions import rank_regions
from dseqjepa_options import EMBED_POOLS, OVERLAY_FORMATS

REPO = Path(__file__).resolve().parents[1]
MIN_FRACTION = 0.03  # a random model's saliency is noisy: a low area filter keeps several regions
BAD = {  # name -> (bytes, reason fragment); sorted first, so that a whole batch can fail
    "a_truncated.jpg": (None, "truncated or corrupt image data"),  # the first third of a JPEG
    "b_text.png": (b"not an image", "not an image file that Pillow can read"),
    "m_empty.png": (b"", "empty file (0 bytes)"),
}


def tiny_model(folder: Path, **overrides) -> tuple[Path, DSeqJEPAModel, DSeqJEPAImageProcessor]:
    config = DSeqJEPAConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, **overrides)
    torch.manual_seed(0)
    model = DSeqJEPAModel(config).eval()
    processor = DSeqJEPAImageProcessor.from_model_config(config)
    save_pretrained_with_pipeline(model, processor, folder)
    return folder, model, processor


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("tiny"))


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth colour field, noise and two discs: something with regions to rank."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    pixels = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 60.0)], -1)
    for _ in range(2):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(0.15, 0.3) * min(width, height)
        pixels[(y - cy) ** 2 + (x - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_folder(folder: Path, count: int = 7, bad: bool = True) -> tuple[list[Path], list[Path]]:
    """`count` good photos of several sizes and formats (+ the BAD files) -> (good, bad), sorted."""
    folder.mkdir(parents=True)
    good = []
    for index in range(count):
        size = [(96, 64), (64, 96), (80, 80), (120, 72)][index % 4]
        path = folder / f"{chr(ord('c') + index)}_photo.{'jpg' if index % 2 else 'png'}"
        photo(*size, seed=index).save(path)
        good.append(path)
    bad_paths = []
    if bad:
        jpeg = good[1].read_bytes()
        for name, (data, _) in BAD.items():
            (folder / name).write_bytes(jpeg[: len(jpeg) // 3] if data is None else data)
            bad_paths.append(folder / name)
    return sorted(good), sorted(bad_paths)


def failure_lines(err: str) -> dict[str, str]:
    return {line.strip().split(": ", 1)[0]: line.strip().split(": ", 1)[1] for line in err.splitlines() if line.startswith("  ")}


# ----------------------------------------------------------------------------- regions


def test_regions_with_and_without_workers_give_the_pipelines_regions_in_input_order(tiny, tmp_path, capsys):
    folder, model, processor = tiny
    good, bad = make_folder(tmp_path / "in")
    outputs = {}
    for workers in ("2", "0"):
        out = tmp_path / f"out{workers}"
        argv = ["regions", str(tmp_path / "in"), "--model", str(folder), "--out", str(out), "--json", "--show-saliency",
                "--min-region-fraction", str(MIN_FRACTION), "--batch-size", "2", "--num-workers", workers]
        assert main(argv) == 1  # the bad files
        captured = capsys.readouterr()
        assert f"wrote {len(good)} overlay(s) to {out}" in captured.out
        lines = failure_lines(captured.err)
        assert sorted(lines) == [str(path) for path in bad]
        assert all(BAD[path.name][1] in lines[str(path)] for path in bad)
        outputs[workers] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert outputs["2"].keys() == {f"{p.stem}.regions.{ext}" for p in good for ext in ("jpg", "json")}
    for name in outputs["2"]:  # the same bytes whether decoded in workers or in this process
        if name.endswith(".json"):
            assert outputs["2"][name] == outputs["0"][name], name
        else:
            with Image.open(tmp_path / "out2" / name) as a, Image.open(tmp_path / "out0" / name) as b:
                assert np.array_equal(np.asarray(a), np.asarray(b)), name

    pipe = SaliencyRankingPipeline(model=model, image_processor=processor, device="cpu")
    for path in good:  # each file's own regions: no row of a batch went to another image
        record = json.loads(outputs["2"][f"{path.stem}.regions.json"])
        image = load_image(path)
        assert record["image"] == str(path) and record["size"] == [image.height, image.width]
        got, want = regions_from_json(record["regions"]), pipe(str(path), min_region_fraction=MIN_FRACTION)
        assert [r["rank"] for r in got] == [r["rank"] for r in want] and len(want) >= 2
        for a, b in zip(got, want):
            assert np.array_equal(a["mask"], b["mask"]) and a["box"] == b["box"]
            assert a["score"] == pytest.approx(b["score"], rel=1e-6)
        with Image.open(tmp_path / "out2" / f"{path.stem}.regions.jpg") as overlay:
            shown = readable(image)[0]  # small ones are drawn scaled up, with the saliency beside or below
            assert overlay.format == "JPEG" and overlay.width * overlay.height > shown.width * shown.height


def test_an_image_without_foreground_region_is_said_and_recorded(tiny, tmp_path, capsys):
    folder, _, _ = tiny
    good, _ = make_folder(tmp_path / "in", count=3, bad=False)
    # An area filter of 1.0 keeps no component (the background always holds a patch): no foreground.
    for fraction, out in (("1.0", tmp_path / "none"), (str(MIN_FRACTION), tmp_path / "some")):
        argv = ["regions", str(tmp_path / "in"), "--model", str(folder), "--out", str(out), "--json",
                "--min-region-fraction", fraction]
        assert main(argv) == 0
        stdout = capsys.readouterr().out
        flags = {}
        for path in good:
            record = json.loads((out / f"{path.stem}.regions.json").read_text())
            flags[path] = record["no_foreground_region"]
            assert flags[path] == all(region["is_background"] for region in record["regions"])
        listed = [path for path in good if f"  {path}\n" in stdout]
        if fraction == "1.0":
            assert all(flags.values())
            assert f"{len(good)} image(s) with no foreground region" in stdout and listed == good
            assert "--min-region-fraction 1: try a lower one" in stdout  # what to do about it
        else:
            assert not any(flags.values()) and "no foreground region" not in stdout and listed == []


def test_skip_existing_says_how_many_it_skipped(tiny, tmp_path, capsys):
    folder, _, _ = tiny
    good, _ = make_folder(tmp_path / "in", count=5, bad=False)
    out = tmp_path / "out"
    argv = ["regions", str(tmp_path / "in"), "--model", str(folder), "--out", str(out), "--batch-size", "2"]
    assert main(argv) == 0
    capsys.readouterr()
    (out / f"{good[3].stem}.regions.jpg").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(argv + ["--skip-existing"]) == 0
    stdout = capsys.readouterr().out
    assert f"wrote 1 overlay(s) to {out}" in stdout
    assert f"skipped {len(good) - 1} image(s) whose outputs exist (--skip-existing)" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.iterdir() if p in stamps} == stamps
    assert (out / f"{good[3].stem}.regions.jpg").is_file()

    _, model, processor = tiny
    results, failures = regions_job.rank_regions_in_files(
        good, model, processor, out_dir=out, skip_existing=True, progress=False, num_workers=0)
    assert failures == [] and [r["image"] for r in results] == good and all(r["skipped"] for r in results)


@pytest.mark.parametrize("overlay_format, pil_format", [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")])
def test_overlay_formats_write_that_format_at_the_drawn_size(tiny, tmp_path, capsys, overlay_format, pil_format):
    folder, _, _ = tiny
    good, _ = make_folder(tmp_path / "in", count=3, bad=False)
    out = tmp_path / "out"
    argv = ["regions", str(tmp_path / "in"), "--model", str(folder), "--out", str(out), "--format", overlay_format]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{path.stem}.regions.{overlay_format}" for path in good)
    for path in good:
        with Image.open(out / f"{path.stem}.regions.{overlay_format}") as overlay, Image.open(path) as image:
            assert overlay.format == pil_format and overlay.size == readable(image)[0].size  # small ones scaled up
    assert set(regions_job.OVERLAY_SAVE_OPTIONS) == set(OVERLAY_FORMATS)  # the CLI's choices are the library's
    with pytest.raises(ValueError, match="overlay_format must be one of jpg, png, webp, got 'gif'"):
        regions_job.rank_regions_in_files(good, *tiny[1:], out_dir=out, overlay_format="gif")


def test_a_write_error_in_a_writer_thread_is_one_line_and_leaves_no_temporary(tiny, tmp_path, capsys):
    folder, _, _ = tiny
    good, _ = make_folder(tmp_path / "in", count=6, bad=False)
    out = tmp_path / "out"
    blocked = out / f"{good[2].stem}.regions.jpg"
    blocked.mkdir(parents=True)  # a folder where a file must go: the rename fails
    (blocked / "keep").write_text("x")
    argv = ["regions", str(tmp_path / "in"), "--model", str(folder), "--out", str(out), "--batch-size", "2",
            "--num-workers", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"dseqjepa regions: error: {blocked}: cannot write it" in err and "Traceback" not in err, err[-2000:]
    assert [p for p in out.rglob(".*")] == []  # no temporary left by any thread


def test_a_non_finite_batch_stops_before_it_is_written_and_earlier_batches_are_complete(tiny, tmp_path, monkeypatch):
    _, model, processor = tiny
    good, _ = make_folder(tmp_path / "in", count=6, bad=False)
    calls = []

    def second_batch_nan(*args, **kwargs):
        ranked = rank_regions(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            ranked["saliency"] = torch.full_like(ranked["saliency"], float("nan"))
        return ranked

    monkeypatch.setattr(regions_job, "rank_regions", second_batch_nan)
    out = tmp_path / "out"
    with pytest.raises(NonFiniteOutputError, match=f"non-finite saliency for {good[2]} and this batch"):
        regions_job.rank_regions_in_files(good, model, processor, out_dir=out, batch_size=2, write_json=True,
                                           num_workers=1, progress=False)
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{p.stem}.regions.{ext}" for p in good[:2] for ext in ("jpg", "json"))
    for path in good[:2]:
        with Image.open(out / f"{path.stem}.regions.jpg") as overlay:
            overlay.load()  # complete


# ----------------------------------------------------------------------------- embed


def reference_outputs(model, processor, paths):
    """An independent forward of each file alone: (pooler_output, CLS output, all tokens, ranked)."""
    pixel_values = torch.cat([processor(load_image(path), return_tensors="pt")["pixel_values"] for path in paths])
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values)
        ranked = rank_regions(model, pixel_values)
    return outputs.pooler_output.numpy(), outputs.last_hidden_state[:, 0].numpy(), outputs.last_hidden_state.numpy(), ranked


@pytest.mark.parametrize("pool", EMBED_POOLS)  # every value `embed --pool` offers
def test_embed_pools_give_the_models_outputs_row_by_row(tiny, tmp_path, capsys, pool):
    folder, model, processor = tiny
    good, bad = make_folder(tmp_path / "in", count=5)
    out = tmp_path / "emb.npy"
    argv = ["embed", str(tmp_path / "in"), "--model", str(folder), "--out", str(out), "--pool", pool, "--regions",
            "--batch-size", "2", "--num-workers", "1"]
    assert main(argv) == 1  # the bad files
    captured = capsys.readouterr()
    assert sorted(failure_lines(captured.err)) == [str(path) for path in bad]
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["files"] == [str(p) for p in good] and sidecar["pool"] == pool
    first = "tokens" if pool == "tokens" else "pooled"
    assert list(sidecar["arrays"]) == [first, "regions", "region_valid", "region_scores"]
    assert sidecar["arrays"][first]["file"] == "emb.npy"
    arrays = {name: np.load(tmp_path / info["file"]) for name, info in sidecar["arrays"].items()}
    mean, cls, tokens, ranked = reference_outputs(model, processor, good)
    expected = {"mean": mean, "cls": cls, "tokens": tokens}[pool]
    assert arrays[first].shape == expected.shape == ((5, 32) if pool != "tokens" else (5, 1 + 64, 32))
    np.testing.assert_allclose(arrays[first], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arrays["regions"], ranked["region_embeddings"].numpy(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(arrays["region_valid"], ranked["valid"].numpy())
    assert f"wrote {out}: 5 image(s), {first} (5, {'65, ' if pool == 'tokens' else ''}32)" in captured.out


def test_pool_cls_needs_a_cls_token(tmp_path, capsys):
    folder, model, processor = tiny_model(tmp_path / "no_cls", use_cls_token=False)
    good, _ = make_folder(tmp_path / "in", count=2, bad=False)
    out = tmp_path / "emb.safetensors"
    assert main(["embed", str(tmp_path / "in"), "--model", str(folder), "--out", str(out), "--pool", "cls"]) == 1
    err = capsys.readouterr().err
    assert "dseqjepa embed: error: --pool cls: the model" in err and "has no CLS token" in err
    assert not out.exists() and not Path(f"{out}.json").exists()
    files, arrays, _ = embed_files(good, model, processor, pool="tokens", num_workers=0, progress=False)
    assert arrays["tokens"].shape == (2, 64, 32)  # patch tokens only


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_embed_over_no_readable_image_is_an_error_and_writes_nothing(tiny, tmp_path, capsys, suffix):
    folder, model, processor = tiny
    (tmp_path / "in").mkdir()
    for name, (data, _) in BAD.items():
        (tmp_path / "in" / name).write_bytes(b"\xff\xd8\xff" if data is None else data)
    out = tmp_path / "out" / f"emb{suffix}"
    out.parent.mkdir()
    assert main(["embed", str(tmp_path / "in"), "--model", str(folder), "--out", str(out), "--regions"]) == 1
    err = capsys.readouterr().err
    assert f"dseqjepa embed: error: none of the {len(BAD)} image file(s) could be read (listed above); nothing was written to {out}" in err
    assert len(failure_lines(err)) == len(BAD) and "Traceback" not in err
    assert list(out.parent.iterdir()) == []

    # The library: every array with 0 rows and its row shape, written only when asked (an empty torchrun shard).
    paths = sorted((tmp_path / "in").iterdir())
    for pool, regions, shapes in (("mean", True, {"pooled": (0, 32), "regions": (0, 5, 32), "region_valid": (0, 5), "region_scores": (0, 5)}),
                                  ("tokens", False, {"tokens": (0, 65, 32)})):
        files, arrays, failures = embed_files(paths, model, processor, pool=pool, regions=regions, num_workers=0, progress=False)
        assert files == [] and len(failures) == len(BAD)
        assert {name: array.shape for name, array in arrays.items()} == shapes
        assert arrays.get("region_valid", np.zeros(0, bool)).dtype == bool
    with pytest.raises(NoImagesEmbeddedError):
        write_embeddings(out, files, arrays, failures)
    assert list(out.parent.iterdir()) == []
    write_embeddings(out, files, arrays, failures, allow_empty=True)
    assert json.loads(Path(f"{out}.json").read_text())["arrays"]["tokens"]["shape"] == [0, 65, 32]


def test_embed_under_torchrun_with_an_empty_shard_and_with_no_readable_image(tiny, tmp_path):
    """Ranks agree on whether anything can be written: an empty shard is written (0 rows) when
    another rank has images; with none on any rank, nothing is written and no rank hangs."""
    folder, _, _ = tiny
    good, _ = make_folder(tmp_path / "in", count=1, bad=False)
    broken = [tmp_path / "in" / f"z{index}.png" for index in range(2)]
    for path in broken:
        path.write_bytes(b"not an image")

    def torchrun(*inputs: Path, out: Path) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "-m", "dseqjepa_cli", "embed", *map(str, inputs), "--model", str(folder), "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    done = torchrun(good[0], broken[0], out=tmp_path / "a" / "emb.npy")
    assert done.returncode != 0  # a file failed; torchrun then reports the ranks' exit codes with its own traceback
    assert "dseqjepa_cli/" not in done.stderr and "dseqjepa_hub/" not in done.stderr, done.stderr[-3000:]  # not ours
    index = json.loads((tmp_path / "a" / "emb.index.json").read_text())
    assert [shard["num_images"] for shard in index["shards"]] == [1, 0]
    assert np.load(tmp_path / "a" / "emb.rank1-of-2.npy").shape == (0, 32)
    assert done.stderr.count(f"  {broken[0]}: not an image file that Pillow can read") == 1  # rank 0, from the shards

    done = torchrun(*broken, out=tmp_path / "b" / "emb.npy")
    assert done.returncode != 0
    assert "dseqjepa embed: error: none of the 2 image file(s) could be read" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "b").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_checks.sh)")
def test_on_cuda_the_commands_give_the_cpus_outputs(tiny, tmp_path, capsys):
    """Pinned batches, non-blocking copies and the copy of batch k after batch k+1 is queued give
    what the CPU gives (to float tolerance: convolutions may use TF32)."""
    folder, _, _ = tiny
    good, _ = make_folder(tmp_path / "in", count=5)
    for device in ("cpu", "cuda"):
        common = ["--model", str(folder), "--batch-size", "2", "--device", device, "--num-workers", "2"]
        assert main(["embed", str(tmp_path / "in"), "--out", str(tmp_path / f"{device}.npy"), "--regions", *common]) == 1
        assert main(["regions", str(tmp_path / "in"), "--out", str(tmp_path / device), "--json", *common]) == 1
    capsys.readouterr()
    cpu, cuda = np.load(tmp_path / "cpu.npy"), np.load(tmp_path / "cuda.npy")
    assert cpu.shape == cuda.shape == (len(good), 32)
    np.testing.assert_allclose(cuda, cpu, rtol=1e-2, atol=1e-3)
    assert sorted(p.name for p in (tmp_path / "cuda").iterdir()) == sorted(p.name for p in (tmp_path / "cpu").iterdir())
    for path in good:
        on_cpu, on_cuda = (json.loads((tmp_path / device / f"{path.stem}.regions.json").read_text()) for device in ("cpu", "cuda"))
        assert on_cuda["size"] == on_cpu["size"] and on_cuda["regions"][-1]["is_background"]


# ----------------------------------------------------------------------------- the one runner


def test_every_job_runs_through_the_one_runner(tiny, tmp_path, monkeypatch):
    """regions, embed, visualize, the evaluation features and the demo each call the runner's loop
    (a job with its own batching loop would leave no call here)."""
    from dseqjepa_hub.application.demo import analyze
    from dseqjepa_hub.application.visualize_job import visualize_files
    from dseqjepa_train.evaluation.features import extract_features

    _, model, processor = tiny
    good, _ = make_folder(tmp_path / "in", count=3, bad=False)
    calls = []
    loop = runner._run

    def counted(batches, *args, **kwargs):
        batches = list(batches)
        calls.append(sum(len(batch.indices) for batch in batches))
        return loop(batches, *args, **kwargs)

    monkeypatch.setattr(runner, "_run", counted)
    jobs = {
        "regions": lambda: regions_job.rank_regions_in_files(good, model, processor, out_dir=tmp_path / "r",
                                                             num_workers=0, progress=False),
        "embed": lambda: embed_files(good, model, processor, num_workers=0, progress=False),
        "visualize": lambda: visualize_files(good, model, processor, "saliency", out_dir=tmp_path / "v", num_workers=0),
        "features": lambda: extract_features(model, processor, good, batch_size=2),
        "demo": lambda: analyze(model, processor, load_image(good[0])),
    }
    for name, job in jobs.items():
        calls.clear()
        job()
        assert calls == [1 if name == "demo" else len(good)], name


def test_visualize_decodes_in_workers_and_reports_unreadable_files_as_regions_does(tiny, tmp_path, capsys):
    folder, _, _ = tiny
    good, bad = make_folder(tmp_path / "in")
    reported = {}
    for command in (["regions"], ["visualize", "--kind", "regions"]):
        argv = [*command, str(tmp_path / "in"), "--model", str(folder), "--out", str(tmp_path / command[0]),
                "--batch-size", "2", "--num-workers", "2"]
        assert main(argv) == 1  # the bad files
        err = capsys.readouterr().err
        assert f"{len(bad)} file(s) could not be read and were skipped:" in err
        reported[command[0]] = failure_lines(err)
    assert reported["visualize"] == reported["regions"] and sorted(reported["regions"]) == [str(p) for p in bad]
    entries = json.loads((tmp_path / "visualize" / "regions.json").read_text())["images"]
    assert [entry["image"] for entry in entries] == [str(path) for path in good]  # input order


# ----------------------------------------------------------------------------- the writer threads


def test_writer_returns_results_in_order_and_raises_a_later_jobs_error_at_once():
    from dseqjepa_hub.application.runner import BackgroundWriter

    def slow(value, seconds):
        time.sleep(seconds)
        return value

    with BackgroundWriter(threads=3, max_pending=2) as writer:
        results = []
        for value in range(6):
            results += writer.submit(slow, value, 0.02 * (6 - value))  # later jobs finish first
        results += writer.finish()
    assert results == list(range(6))

    if sys.platform.startswith("linux"):  # writers yield the cores to the model's threads
        with BackgroundWriter(threads=1) as writer:
            niceness = writer.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())) + writer.finish()
        assert niceness == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + runner.WRITER_NICENESS)]
        assert runner.WRITER_NICENESS > 0

    def fail():
        raise OSError("disk full")

    gate = threading.Event()
    writer = BackgroundWriter(threads=2, max_pending=8)
    with pytest.raises(OSError, match="disk full"), writer:
        try:
            writer.submit(gate.wait, 30)
            writer.submit(fail)
            deadline = time.monotonic() + 10
            while not writer._pending[-1].done() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not writer._pending[0].done()  # the first job still runs: the error does not wait for it
            writer.collect()
        finally:
            gate.set()


def test_writer_finishes_submitted_jobs_when_the_error_is_not_theirs_and_cancels_after_their_own():
    from dseqjepa_hub.application.runner import BackgroundWriter

    ran = []

    def job(value):
        time.sleep(0.05)
        ran.append(value)

    with pytest.raises(ValueError), BackgroundWriter(threads=1, max_pending=10) as writer:
        for value in range(4):
            writer.submit(job, value)
        raise ValueError("the model's error, not a write's")
    assert sorted(ran) == [0, 1, 2, 3]  # good outputs of earlier batches are all written

    ran.clear()

    def fail():
        raise OSError("read-only file system")

    gate = threading.Event()
    with pytest.raises(OSError), BackgroundWriter(threads=1, max_pending=10) as writer:
        writer.submit(gate.wait, 30)  # holds the one thread while the rest is queued
        writer.submit(fail)
        for value in range(4):
            writer.submit(job, value)
        gate.set()
        writer.finish()
    assert len(ran) <= 1  # after a failed write, the queued ones are cancelled (one may have started)


# ----------------------------------------------------------------------------- modes, defaults


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_file_and_folder_written_gets_the_umasks_mode(tiny, tmp_path, capsys, umask):
    from safetensors.numpy import save_file

    folder, _, _ = tiny
    make_folder(tmp_path / "in", count=2, bad=False)
    previous = os.umask(umask)
    try:
        out = tmp_path / "out"
        assert main(["regions", str(tmp_path / "in"), "--model", str(folder), "--out", str(out / "regions"), "--json"]) == 0
        for suffix in (".npy", ".safetensors"):
            assert main(["embed", str(tmp_path / "in"), "--model", str(folder), "--out", str(out / f"emb{suffix}"), "--regions"]) == 0
        with atomic_directory(out / "folder") as partial:  # as converted models, checkpoints, data sets are written
            (partial / "sub").mkdir()
            save_file({"x": np.zeros(2, np.float32)}, str(partial / "sub" / "model.safetensors"))
            (partial / "config.json").write_text("{}")
    finally:
        os.umask(previous)
    capsys.readouterr()
    modes = {path.relative_to(out).as_posix(): stat.S_IMODE(path.stat().st_mode) for path in out.rglob("*")}
    assert {"emb.safetensors", "emb.npy", "emb.regions.npy", "emb.npy.json", "folder/sub/model.safetensors"} <= set(modes)
    for name, mode in modes.items():
        expected = (0o777 if (out / name).is_dir() else 0o666) & ~umask
        assert mode == expected, f"{name}: {mode:o}, expected {expected:o}"


def test_default_workers_follow_the_cores_and_the_device(monkeypatch):
    expected = {  # cores -> (cpu, cuda)
        1: (0, 0), 2: (0, 1), 3: (0, 2), 4: (1, 3), 8: (2, 4), 16: (4, 4), 64: (4, 4),
    }
    for cores, (cpu, cuda) in expected.items():
        monkeypatch.setattr(runner, "available_cores", lambda cores=cores: cores)
        assert (runner.default_num_workers("cpu"), runner.default_num_workers("cuda")) == (cpu, cuda), cores
    monkeypatch.setattr(runner, "available_cores", lambda: 16)
    assert runner.default_num_workers("cuda:1", processes=8) == 1  # 2 cores a rank under torchrun
    assert runner.workers_for(num_files=3, batch_size=2, num_workers=4) == 2  # no idle worker


def test_images_are_preprocessed_on_one_intra_op_thread_and_the_count_restored():
    """One image's small tensors are not split over the cores (on busy cores every operation would wait for
    all of them); the pixels are the processor's own, and the thread count is back afterwards, also after
    an error."""
    processor = DSeqJEPAImageProcessor()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    seen = []

    def recording(image, **kwargs):
        seen.append(torch.get_num_threads())
        return processor(image, **kwargs)

    def failing(image, **kwargs):
        raise ValueError("bad image")

    before = torch.get_num_threads()  # 1 in the tests (conftest)
    torch.set_num_threads(2)
    try:
        item = runner.prepare_image(0, None, image, recording, keep_image=False)
        assert seen == [1] and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="bad image"):
            runner.prepare_image(0, None, image, failing, keep_image=False)
        assert torch.get_num_threads() == 2
        # Another thread (a server's request handler) leaves the count alone: a thread starting its first
        # parallel work meanwhile would otherwise keep 1 thread for good.
        handler = threading.Thread(target=runner.prepare_image, args=(0, None, image, recording), kwargs={"keep_image": False})
        handler.start()
        handler.join()
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)
    assert torch.equal(item["pixel_values"], processor(image, return_tensors="pt")["pixel_values"][0])


def test_the_library_jobs_name_two_files_of_one_stem_apart(tiny, tmp_path):
    """regions and visualize called as libraries name their outputs through the one output_stems: two
    photos called cat.jpg in two folders give cat and cat-2, neither overwriting the other."""
    from dseqjepa_hub.application.visualize_job import visualize_files

    _, model, processor = tiny
    first, _ = make_folder(tmp_path / "a", count=1, bad=False)
    second, _ = make_folder(tmp_path / "b", count=1, bad=False)
    assert first[0].name == second[0].name
    files = [first[0], second[0]]
    visualize_files(files, model, processor, "saliency", out_dir=tmp_path / "v", num_workers=0)
    regions_job.rank_regions_in_files(files, model, processor, out_dir=tmp_path / "r", num_workers=0)
    stem = first[0].stem
    for folder in ("v", "r"):
        written = sorted(path.name for path in (tmp_path / folder).iterdir() if not path.name.endswith(".json"))
        assert sorted(name.split(".")[0] for name in written) == sorted([stem, f"{stem}-2"]), written
