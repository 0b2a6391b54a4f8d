"""The user's journeys end to end: what a new user does across the package's parts, offline."""

from __future__ import annotations

from pathlib import Path

from dseqjepa_cli import main

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "examples/images/coffee.jpg"


def test_a_preset_name_works_wherever_a_model_is_named_and_says_it_is_random(tmp_path, caplog):
    assert main(["regions", str(IMAGE), "--model", "vit_tiny_patch16_224", "--out", str(tmp_path / "out")]) == 0
    assert "RANDOMLY INITIALISED" in caplog.text
    assert (tmp_path / "out/coffee.regions.jpg").is_file()
    caplog.clear()
    assert main(["embed", str(IMAGE), "--model", "vit_tiny_patch16_224", "--out", str(tmp_path / "e.npy")]) == 0
    assert "RANDOMLY INITIALISED" in caplog.text


# ----------------------------------------------------------------------------- (a) + (c): fine-tune -> push -> load anywhere

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

WITHOUT_PACKAGE = 'import sys\nsys.modules["dseqjepa_hub"] = None  # the folder alone: only its remote code\n'


def offline_env(tmp_path: Path, cache: Path) -> dict:
    return {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(cache),
            "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_ENDPOINT": "http://127.0.0.1:9", "OMP_NUM_THREADS": "1"}


def run_python(script: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A classifier fine-tuned with the Trainer (examples/finetune_trainer.py), pushed with --dry-run,
    and the staged folder in an HF cache under its repo id."""
    from test_hub import fill_cache
    from test_trainer_example import load_example, make_image_folder

    from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAImageProcessor, DSeqJEPAModel

    root = tmp_path_factory.mktemp("journey")
    make_image_folder(root / "data")
    torch.manual_seed(0)
    config = DSeqJEPAConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64)
    DSeqJEPAModel(config).save_pretrained(root / "pretrained")
    DSeqJEPAImageProcessor.from_model_config(config).save_pretrained(root / "pretrained")
    load_example().main(["--data", str(root / "data"), "--model", str(root / "pretrained"),
                         "--output", str(root / "finetuned"), "--max-steps", "4", "--batch-size", "8"])
    repo_id = "journey-org/tiny-finetuned"
    assert main(["push", str(root / "finetuned"), "--repo-id", repo_id, "--dry-run", "--stage-dir",
                 str(root / "stage"), "--license", "apache-2.0"]) == 0
    cache = root / "hf" / "hub"
    fill_cache(root / "stage", cache, repo_id)
    return root, repo_id, cache


def test_fine_tuned_pushed_model_classifies_the_same_without_the_package(published):
    from dseqjepa_hub import DSeqJEPAForImageClassification, DSeqJEPAImageProcessor

    root, repo_id, cache = published
    image = root / "data/red/3.png"
    script = WITHOUT_PACKAGE + textwrap.dedent(f"""
        import json, torch
        from transformers import AutoModel, AutoModelForImageClassification, pipeline
        classifier = pipeline("image-classification", model={repo_id!r}, trust_remote_code=True, top_k=None)
        scores = {{r["label"]: r["score"] for r in classifier({str(image)!r})}}
        encoder = AutoModel.from_pretrained({repo_id!r}, trust_remote_code=True)
        head = AutoModelForImageClassification.from_pretrained({repo_id!r}, trust_remote_code=True)
        print(json.dumps({{"scores": scores, "encoder": type(encoder).__name__, "head": type(head).__name__,
                           "module": type(head).__module__}}))
    """)
    done = run_python(script, root, offline_env(root, cache))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules.")
    assert (result["encoder"], result["head"]) == ("DSeqJEPAModel", "DSeqJEPAForImageClassification")
    model = DSeqJEPAForImageClassification.from_pretrained(root / "finetuned").eval()
    processor = DSeqJEPAImageProcessor.from_pretrained(root / "finetuned")
    from dseqjepa_hub.image_io import load_image

    with torch.no_grad():
        probabilities = model(**processor(load_image(image), return_tensors="pt")).logits.softmax(-1)[0]
    expected = {model.config.id2label[i]: float(p) for i, p in enumerate(probabilities)}
    assert set(result["scores"]) == set(expected) == {"blue", "red"}
    for label, score in expected.items():
        assert abs(result["scores"][label] - score) < 1e-5


def test_every_snippet_of_the_staged_card_runs_as_written(published, tmp_path):
    root, repo_id, cache = published
    card = (root / "stage/README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(snippets) == 4  # classification, embeddings, regions, fine-tuning
    (tmp_path / "image.jpg").write_bytes((REPO / "examples/images/coffee.jpg").read_bytes())
    for snippet in snippets:
        assert repo_id in snippet
        done = run_python(WITHOUT_PACKAGE + snippet, tmp_path, offline_env(tmp_path, cache))
        assert done.returncode == 0, f"{snippet}\n{done.stderr[-3000:]}"
        for noise in ("Loading weights", "LOAD REPORT", "pin_memory"):  # silent unless something is wrong
            assert noise not in done.stderr, f"{snippet}\n{done.stderr[-3000:]}"


# ----------------------------------------------------------------------------- (d) no prompt on a terminal


@pytest.mark.parametrize("task", ["image-classification", "image-feature-extraction", "saliency-ranking"])
def test_no_question_is_asked_on_a_terminal(published, task):
    """With the package imported, a pipeline on a saved folder is made at once, without remote code."""
    import pty
    import time

    root, _, _ = published
    folder = root / "stage"
    script = ("import dseqjepa_hub\nfrom transformers import pipeline\n"
              f"pipe = pipeline({task!r}, model={str(folder)!r})\nprint('MADE', type(pipe).__name__)\n")
    primary, secondary = pty.openpty()
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", script], stdin=secondary, stdout=secondary, stderr=secondary,
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, close_fds=True)
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=120)
    os.close(primary)
    text = output.decode(errors="replace")
    assert process.returncode == 0 and "MADE" in text, text[-3000:]
    assert "custom code" not in text and "[y/N]" not in text, text[-3000:]
    assert time.monotonic() - started < 60


# ----------------------------------------------------------------------------- (b) every folder, every Auto class, both pipelines


FOLDER_CHECK = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch
    from PIL import Image
    from transformers import (AutoBackbone, AutoImageProcessor, AutoModel, AutoModelForImageClassification,
                              pipeline)
    folders, image, remote = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "remote"
    trust = {"trust_remote_code": True} if remote else {}
    report = {}
    for folder in folders:
        encoder = AutoModel.from_pretrained(folder, **trust).eval()
        head = AutoModelForImageClassification.from_pretrained(folder, num_labels=3, ignore_mismatched_sizes=True, **trust)
        processor = AutoImageProcessor.from_pretrained(folder, **trust)
        sizes = {}
        for side in (encoder.config.image_size, encoder.config.image_size + 2 * encoder.config.patch_size):
            resized = type(processor).from_pretrained(folder, size={"height": side, "width": side})
            features = pipeline("image-feature-extraction", model=folder, image_processor=resized, **trust)
            ranker = pipeline("saliency-ranking", model=folder, image_processor=resized, **trust)
            tokens = np.asarray(features(image))
            regions = ranker(image)
            sizes[side] = {"tokens": list(tokens.shape), "regions": len(regions),
                           "mask": list(regions[0]["mask"].shape), "pooled": encoder(
                               pixel_values=resized(Image.open(image).convert("RGB"), return_tensors="pt")["pixel_values"]
                           ).pooler_output[0, :4].tolist()}
        report[folder] = {"encoder": type(encoder).__module__, "head": type(head).__name__, "sizes": sizes}
    print(json.dumps(report))
""")


@pytest.mark.parametrize("mode", ["package", "remote"])
def test_every_folder_loads_with_every_auto_class_and_both_pipelines_at_two_sizes(published, tmp_path, mode):
    from dseqjepa_convert import convert
    from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAForImageClassification, DSeqJEPAModel

    root, _, _ = published
    config = DSeqJEPAConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64)
    torch.manual_seed(0)
    DSeqJEPAModel(config).save_pretrained(tmp_path / "encoder")  # no processor given: one is written
    DSeqJEPAForImageClassification(config).save_pretrained(tmp_path / "classifier")
    torch.save(DSeqJEPAModel(config).state_dict(), tmp_path / "release.pth")
    convert(tmp_path / "release.pth", "dseq-release", tmp_path / "converted", num_heads=2, log=lambda *_: None)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    # Loaded as remote code without the package and saved again: still a complete folder.
    resave = WITHOUT_PACKAGE + (f"from transformers import AutoModel\nAutoModel.from_pretrained({str(tmp_path / 'encoder')!r}, "
                                f"trust_remote_code=True).save_pretrained({str(tmp_path / 'resaved')!r})\n")
    done = run_python(resave, tmp_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    folders = [str(tmp_path / name) for name in ("encoder", "classifier", "converted", "resaved")] + [str(root / "stage")]
    script = (WITHOUT_PACKAGE if mode == "remote" else "import dseqjepa_hub\n") + FOLDER_CHECK
    done = subprocess.run([sys.executable, "-c", script, json.dumps(folders), str(IMAGE), mode], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    from PIL import Image

    width, height = Image.open(IMAGE).size
    for folder in folders:
        entry = report[folder]
        assert entry["head"] == "DSeqJEPAForImageClassification"
        assert entry["encoder"].startswith("transformers_modules." if mode == "remote" else "dseqjepa_hub.")
        model = DSeqJEPAModel.from_pretrained(folder)
        for side, result in entry["sizes"].items():
            grid = int(side) // model.config.patch_size
            assert result["tokens"][-2:] == [grid * grid + 1, 32] and result["mask"] == [height, width]
            assert result["regions"] >= 1


def test_head_settings_given_to_from_pretrained_are_checked_and_applied():
    from dseqjepa_hub import DSeqJEPAForImageClassification, default_model_path
    from dseqjepa_hub.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="classifier_pooling: expected one of"):
        DSeqJEPAForImageClassification.from_pretrained(default_model_path(), num_labels=2, classifier_pooling="max")
    model = DSeqJEPAForImageClassification.from_pretrained(default_model_path(), num_labels=2, freeze_backbone=True)
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    model, info = DSeqJEPAForImageClassification.from_pretrained(default_model_path(), num_labels=2,
                                                                 freeze_backbone=True, output_loading_info=True)
    assert not any(parameter.requires_grad for parameter in model.dseqjepa.parameters())


def test_evaluation_runs_at_another_input_size(tmp_path, capsys):
    from test_evaluation import _tiny_model, _tiny_scenes

    from dseqjepa_hub.application.loading import ModelLoadError, load_model

    model_dir, data_dir = _tiny_model(tmp_path), _tiny_scenes(tmp_path / "scenes")
    patch = load_model(str(model_dir)).model.config.patch_size
    out = tmp_path / "knn.json"
    assert main(["eval", str(model_dir), "--data", str(data_dir), "--task", "knn", "--device", "cpu",
                 "--size", str(6 * patch), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n_images"] == 4
    with pytest.raises(ModelLoadError, match="multiple of the patch size"):
        load_model(str(model_dir), image_size=patch + 1)


def test_regions_and_embed_run_at_another_input_size(tmp_path):
    """--size: the model's grid follows (its positions are regenerated); masks stay at the image's size."""
    from PIL import Image
    from safetensors.numpy import load_file

    from dseqjepa_hub.application.region_json import regions_from_json

    width, height = Image.open(IMAGE).size
    for size in (96, 160):
        out = tmp_path / f"regions{size}"
        assert main(["regions", str(IMAGE), "--out", str(out), "--json", "--size", str(size)]) == 0
        record = json.loads((out / "coffee.regions.json").read_text())
        regions = regions_from_json(record["regions"])
        assert regions[0]["mask"].shape == (height, width)
        assert regions[0]["patch_mask"].shape == (size // 8, size // 8)  # the bundled model's patch is 8 px
    assert main(["embed", str(IMAGE), "--size", "160", "--pool", "tokens", "--out", str(tmp_path / "t.safetensors")]) == 0
    assert load_file(tmp_path / "t.safetensors")["tokens"].shape == (1, 20 * 20 + 1, 128)
    assert main(["regions", str(IMAGE), "--out", str(tmp_path / "bad"), "--size", "100"]) == 1
