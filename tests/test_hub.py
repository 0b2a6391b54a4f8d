"""Publishing: staging (exact upload set, model card), offline loading by repo id from an HF cache in a
process without dseqjepa_hub, the upload up to the HTTP boundary, refusals before any network call."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from PIL import Image

from dseqjepa_cli import main
from dseqjepa_convert import READERS, convert
from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAModel
from dseqjepa_hub.application import publish as publish_module
from dseqjepa_hub.application.atomic import FolderNotEmptyError, atomic_directory
from dseqjepa_hub.application.loading import ModelLoadError
from dseqjepa_hub.application.publish import HubError, push, stage

REPO_ID = "dseq-org/tiny-ijepa"
STAGED_FILES = {
    "README.md", "config.json", "model.safetensors", "preprocessor_config.json", "conversion.json",
    "eval_results.json", "configuration_dseqjepa.py", "modeling_dseqjepa.py", "image_processing_dseqjepa.py",
    "regions.py", "pipeline_saliency_ranking.py", "image_io.py", "errors.py",
}
EVAL_RESULT = {  # what `dseqjepa eval --task linear --out FILE.json` writes
    "task": "linear", "dataset": "scenes", "split": "val", "metric": "top1", "value": 0.625,
    "model": "tiny", "n_images": 40, "details": {"layers": "last"},
}


def tiny_config(**overrides) -> DSeqJEPAConfig:
    return DSeqJEPAConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=128, **overrides)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A model folder as `dseqjepa convert` writes it: I-JEPA release weights (no CLS token)."""
    root = tmp_path_factory.mktemp("converted")
    torch.manual_seed(0)
    model = DSeqJEPAModel(tiny_config(use_cls_token=False))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    torch.save({"target_encoder": {f"module.{k}": v for k, v in model.state_dict().items()},
                "encoder": model.state_dict(), "epoch": 3}, root / "IN1K-vit.pth.tar")
    convert(root / "IN1K-vit.pth.tar", "ijepa-release", root / "model", num_heads=2,
            base_model="facebook/ijepa_vith14_1k", log=lambda *_: None)
    (root / "model" / "eval_results.json").write_text(json.dumps(EVAL_RESULT))
    return root / "model"


@pytest.fixture(scope="module")
def staged(converted, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("staged") / "stage"
    stage(converted, out, repo_id=REPO_ID, datasets=["imagenet-1k"])
    return out


def test_stage_writes_exactly_the_upload_set(staged):
    assert {p.name for p in staged.iterdir()} == STAGED_FILES
    config = json.loads((staged / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_dseqjepa.DSeqJEPAConfig",
        "AutoModel": "modeling_dseqjepa.DSeqJEPAModel",
        "AutoModelForImageClassification": "modeling_dseqjepa.DSeqJEPAForImageClassification",
        "AutoBackbone": "modeling_dseqjepa.DSeqJEPABackbone",
        "AutoImageProcessor": "image_processing_dseqjepa.DSeqJEPAImageProcessor",
    }
    assert config["custom_pipelines"]["saliency-ranking"]["impl"] == "pipeline_saliency_ranking.SaliencyRankingPipeline"
    processor = json.loads((staged / "preprocessor_config.json").read_text())
    assert processor["auto_map"]["AutoImageProcessor"] == "image_processing_dseqjepa.DSeqJEPAImageProcessor"


def test_model_card_metadata_and_sections(staged):
    card = ModelCard.load(staged / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-feature-extraction"
    assert data.license == "cc-by-nc-4.0"  # recorded by convert for I-JEPA weights
    assert data.base_model == "facebook/ijepa_vith14_1k" and data.datasets == ["imagenet-1k"]
    assert "dseq-jepa" in data.tags
    (result,) = data.eval_results
    assert (result.task_type, result.dataset_type, result.dataset_split, result.metric_type, result.metric_value) == (
        "image-classification", "scenes", "val", "top1", 0.625)
    text = card.text
    for section in ("## Usage", "### Image embeddings", "### Ranked regions", "### Fine-tuning with the Trainer",
                    "## Training data and recipe", "## Evaluation", "## Limitations", "## Citation"):
        assert section in text
    assert f'pipeline("saliency-ranking", model="{REPO_ID}", trust_remote_code=True)' in text
    assert "**No CLS token.**" in text and 'saliency_query="mean_patch"' in text
    assert "Converted from a `ijepa-release` checkpoint ([facebook/ijepa_vith14_1k](" in text
    assert "Weights converted from I-JEPA (Assran et al., 2023)" in text  # the ijepa-release reader's text
    assert "| image-classification | scenes | val |" in text
    assert json.loads((staged / "eval_results.json").read_text())["results"][0]["value"] == 0.625


def test_card_of_a_cls_model_has_no_fallback_note(tmp_path):
    DSeqJEPAModel(tiny_config()).save_pretrained(tmp_path / "model")
    stage(tmp_path / "model", tmp_path / "stage", repo_id="org/cls", license="apache-2.0")
    card = ModelCard.load(tmp_path / "stage" / "README.md")
    assert "No CLS token" not in card.text and card.data.base_model is None and card.data.eval_results is None
    assert "CLS token first" in card.text


def test_licence_and_card_text_come_from_the_reader(tmp_path, monkeypatch):
    """The card renders what the reader supplied (through conversion.json), whatever the format's name."""
    model = DSeqJEPAModel(tiny_config())
    torch.save(model.state_dict(), tmp_path / "vit.pth")
    reader = READERS["timm"]

    def reader_with_card_text(*args, **kwargs):
        return replace(reader(*args, **kwargs), license="mit", converted_from="the test's own source",
                       training_text="Trained on nothing in particular.")

    monkeypatch.setitem(READERS, "timm", reader_with_card_text)
    convert(tmp_path / "vit.pth", "timm", tmp_path / "model", num_heads=2, log=lambda *_: None)
    stage(tmp_path / "model", tmp_path / "stage", repo_id="org/reader-text")
    card = ModelCard.load(tmp_path / "stage" / "README.md")
    assert card.data.license == "mit"
    assert "Converted from the test's own source; the conversion was checked" in card.text
    assert "## Training data and recipe\n\nTrained on nothing in particular.\n" in card.text


def test_hub_names_no_checkpoint_format():
    """Card text is the readers' business: publish.py does not switch on format names."""
    text = Path(publish_module.__file__).read_text()
    assert [fmt for fmt in READERS if f'"{fmt}"' in text or f"'{fmt}'" in text] == []


def test_convert_and_stage_refuse_a_non_empty_folder_alike(converted, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("keep")
    with pytest.raises(FolderNotEmptyError) as by_convert:
        convert(converted.parent / "IN1K-vit.pth.tar", "ijepa-release", occupied, num_heads=2)
    with pytest.raises(FolderNotEmptyError) as by_stage:
        stage(converted, occupied, repo_id=REPO_ID)
    assert str(by_convert.value) == str(by_stage.value)
    assert str(by_stage.value).startswith(f"{occupied} exists and is not an empty folder")
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_atomic_directory_never_merges_into_a_folder_filled_meanwhile(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FolderNotEmptyError):
        with atomic_directory(out) as partial:
            (partial / "new.txt").write_text("new")
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
    assert os.listdir(out) == ["theirs.txt"] and os.listdir(tmp_path) == ["out"]


def test_atomic_directory_replace_swaps_the_whole_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(out, replace=True) as partial:
            (partial / "new.txt").write_text("new")
            raise RuntimeError("failed midway")
    assert os.listdir(out) == ["old.txt"] and os.listdir(tmp_path) == ["out"]
    with atomic_directory(out, replace=True) as partial:
        (partial / "new.txt").write_text("new")
    assert os.listdir(out) == ["new.txt"] and os.listdir(tmp_path) == ["out"]


OFFLINE_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["dseqjepa_hub"] = None  # the package must not be needed: only the repo's remote code
    try:
        import dseqjepa_hub
    except ImportError:
        pass
    else:
        raise SystemExit("dseqjepa_hub was importable")
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel, pipeline

    repo_id, image_path, pixels_path = sys.argv[1:4]
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    processor = AutoImageProcessor.from_pretrained(repo_id, trust_remote_code=True)
    with torch.no_grad():
        tokens = model(pixel_values=torch.load(pixels_path, weights_only=True)).last_hidden_state
    ranker = pipeline("saliency-ranking", model=repo_id, trust_remote_code=True)
    regions = ranker(Image.open(image_path))
    print(json.dumps({
        "model_module": type(model).__module__,
        "processor": type(processor).__name__,
        "tokens": tokens.tolist(),
        "regions": [{"rank": r["rank"], "box": [int(v) for v in r["box"]], "is_background": bool(r["is_background"]),
                     "mask_shape": list(r["mask"].shape)} for r in regions],
    }))
""")


def fill_cache(staged: Path, cache: Path, repo_id: str) -> None:
    """The HF cache layout: models--org--name/{refs/main, snapshots/<rev>/...}."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(staged, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def test_loads_offline_by_repo_id_without_the_package(staged, tmp_path):
    cache = tmp_path / "hf" / "hub"
    fill_cache(staged, cache, REPO_ID)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(tmp_path / "image.png")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(pixels, tmp_path / "pixels.pt")
    (tmp_path / "run.py").write_text(OFFLINE_SCRIPT)
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_CACHE": str(cache), "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    completed = subprocess.run(
        [sys.executable, str(tmp_path / "run.py"), REPO_ID, str(tmp_path / "image.png"), str(tmp_path / "pixels.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["model_module"].startswith("transformers_modules.")  # the repo's own code, not the package
    assert result["processor"] == "DSeqJEPAImageProcessor"
    expected = DSeqJEPAModel.from_pretrained(staged).eval()(pixel_values=pixels).last_hidden_state
    assert torch.allclose(torch.tensor(result["tokens"]), expected, atol=1e-5)
    regions = result["regions"]
    assert regions and regions[-1]["is_background"] and [r["rank"] for r in regions] == list(range(1, len(regions) + 1))
    assert all(r["mask_shape"] == [48, 40] for r in regions)

    # The package's own class resolves the repo id from the cache offline too.
    model = DSeqJEPAModel.from_pretrained(REPO_ID, cache_dir=cache, local_files_only=True)
    assert torch.allclose(model(pixel_values=pixels).last_hidden_state, expected)


class RecordingHub:
    """Intercepts HfApi at the HTTP boundary: create_repo, create_branch and create_commit are recorded."""

    def __init__(self, monkeypatch):
        self.calls = []
        recorder = self

        def record(name):
            def method(api, *args, **kwargs):
                entry = {"name": name, "args": args, "kwargs": kwargs, "endpoint": api.endpoint, "token": api.token}
                if name == "create_commit":
                    entry["files"] = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes()
                                      for op in kwargs["operations"]}
                recorder.calls.append(entry)
            return method

        for name in ("create_repo", "create_branch", "create_commit"):
            monkeypatch.setattr(HfApi, name, record(name))
        monkeypatch.setattr(HfApi, "upload_folder", lambda *a, **k: pytest.fail("upload_folder may split commits"))

    def names(self):
        return [call["name"] for call in self.calls]


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a real request would fail
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    return RecordingHub(monkeypatch)


def test_push_uploads_the_staged_folder_in_one_commit(converted, staged, hub, tmp_path, capsys):
    code = main(["push", str(converted), "--repo-id", REPO_ID, "--private", "--revision", "v1",
                 "--commit-message", "First release", "--dataset", "imagenet-1k",
                 "--stage-dir", str(tmp_path / "pushed")])
    assert code == 0, capsys.readouterr().err
    assert hub.names() == ["create_repo", "create_branch", "create_commit"]
    create_repo, create_branch, commit = hub.calls
    assert create_repo["args"] == (REPO_ID,) and create_repo["kwargs"]["private"] is True
    assert create_repo["kwargs"]["exist_ok"] is True
    assert create_branch["kwargs"]["branch"] == "v1"
    assert commit["kwargs"]["repo_id"] == REPO_ID and commit["kwargs"]["commit_message"] == "First release"
    assert commit["kwargs"]["revision"] == "v1" and commit["kwargs"]["create_pr"] is False
    assert all(call["endpoint"] == "http://127.0.0.1:9" and call["token"] == "hf_test_token" for call in hub.calls)
    assert set(commit["files"]) == STAGED_FILES
    for name in STAGED_FILES:  # exactly what was staged, byte for byte
        assert commit["files"][name] == (staged / name).read_bytes(), name


def test_push_create_pr_public_default_message(converted, hub):
    push(converted, REPO_ID, create_pr=True, log=lambda *_: None)
    assert hub.names() == ["create_repo", "create_commit"]
    assert hub.calls[0]["kwargs"]["private"] is False
    commit = hub.calls[1]["kwargs"]
    assert commit["create_pr"] is True and commit["revision"] is None
    assert commit["commit_message"].startswith("Upload DSeq-JEPA model")


def test_dry_run_stages_and_makes_no_call(converted, hub, tmp_path):
    said = []
    names = push(converted, REPO_ID, dry_run=True, stage_dir=tmp_path / "stage", log=said.append)
    assert set(names) == STAGED_FILES and hub.calls == []
    assert said[-1].endswith(f"(dry run: nothing uploaded; `hf upload {REPO_ID} {tmp_path / 'stage'}` uploads them)")
    with pytest.raises(HubError, match="--dry-run needs --stage-dir"):
        push(converted, REPO_ID, dry_run=True)


def test_refusals_happen_before_any_network_call(converted, hub, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(converted, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["push", str(broken), "--repo-id", REPO_ID]) == 1
    assert f"dseqjepa push: error: {broken / 'model.safetensors'}: not a readable safetensors file" in capsys.readouterr().err

    bad_eval = tmp_path / "eval.json"
    bad_eval.write_text(json.dumps({**EVAL_RESULT, "value": "high"}))
    assert main(["push", str(converted), "--repo-id", REPO_ID, "--eval-file", str(bad_eval)]) == 1
    assert "value must be a number" in capsys.readouterr().err

    no_license = tmp_path / "no-license"
    DSeqJEPAModel(tiny_config()).save_pretrained(no_license)
    assert main(["push", str(no_license), "--repo-id", REPO_ID]) == 1
    assert "pass --license" in capsys.readouterr().err

    assert main(["push", str(converted), "--repo-id", "not a repo id"]) == 1
    assert "--repo-id" in capsys.readouterr().err

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("keep")
    assert main(["push", str(converted), "--repo-id", REPO_ID, "--dry-run", "--stage-dir", str(occupied)]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert hub.calls == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory) -> Path:
    """What `trainer.save_model()` writes for a fine-tuned classifier: every tensor of the head."""
    from dseqjepa_hub import DSeqJEPAForImageClassification, DSeqJEPAImageProcessor

    folder = tmp_path_factory.mktemp("fine-tuned") / "model"
    torch.manual_seed(0)
    model = DSeqJEPAForImageClassification(tiny_config(num_labels=3, id2label={0: "cat", 1: "dog", 2: "fox"},
                                                       label2id={"cat": 0, "dog": 1, "fox": 2}))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    DSeqJEPAImageProcessor.from_model_config(model.config).save_pretrained(folder)
    return folder


def test_push_publishes_a_fine_tuned_head_as_it_was_given(fine_tuned, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "stage"
    stage(fine_tuned, out, repo_id="org/tiny-classifier", license="apache-2.0")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["DSeqJEPAForImageClassification"]
    assert config["id2label"] == {"0": "cat", "1": "dog", "2": "fox"}
    before, after = load_file(fine_tuned / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys() and any(name.startswith("classifier.") for name in after)
    assert all(torch.equal(before[name], after[name]) for name in before)
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-classification"
    assert 'pipeline("image-classification", model="org/tiny-classifier"' in card.content
    assert "3 classes" in card.content and "cat, dog, fox" in card.content


def test_push_refuses_a_folder_whose_tensors_the_class_does_not_account_for(fine_tuned, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(fine_tuned, folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["extra_head.weight"] = torch.zeros(2, 2)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="unaccounted for by DSeqJEPAForImageClassification: extra_head.weight"):
        stage(folder, tmp_path / "stage", repo_id="org/x", license="apache-2.0")


def test_results_of_two_protocols_on_one_dataset_keep_their_names(converted, tmp_path):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    knn = {**EVAL_RESULT, "task": "knn", "value": 0.5}
    (tmp_path / "knn.json").write_text(json.dumps(knn))
    out = tmp_path / "stage"
    stage(converted, out, repo_id=REPO_ID, eval_files=[tmp_path / "knn.json"])
    card = ModelCard.load(out / "README.md")
    index = card.data.to_dict()["model-index"][0]["results"]
    names = {entry["task"]["name"]: entry["metrics"][0]["value"] for entry in index}
    assert names == {"linear probe (frozen encoder)": 0.625, "k-NN (frozen encoder)": 0.5}
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert sorted(r.metric_value for r in results) == [0.5, 0.625]


def test_card_notes_of_the_weights_reach_the_card(converted, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(converted, folder)
    provenance = json.loads((folder / "conversion.json").read_text())
    provenance["card_notes"] = "## What these weights are not good for\n\nAnything at all."
    (folder / "conversion.json").write_text(json.dumps(provenance))
    stage(folder, tmp_path / "stage", repo_id=REPO_ID)
    content = (tmp_path / "stage/README.md").read_text()
    assert "## What these weights are not good for\n\nAnything at all." in content
    assert content.index("not good for") < content.index("## Evaluation")


def test_push_publishes_a_backbone_as_a_backbone(tmp_path):
    from dseqjepa_hub import DSeqJEPABackbone

    torch.manual_seed(0)
    DSeqJEPABackbone(tiny_config()).save_pretrained(tmp_path / "backbone")
    stage(tmp_path / "backbone", tmp_path / "stage", repo_id="org/tiny-backbone", license="apache-2.0")
    assert json.loads((tmp_path / "stage/config.json").read_text())["architectures"] == ["DSeqJEPABackbone"]
    assert DSeqJEPABackbone.from_pretrained(tmp_path / "stage")(torch.randn(1, 3, 32, 32)).feature_maps[-1].shape == (
        1, 32, 4, 4)


class _RefusingHub(http.server.BaseHTTPRequestHandler):
    """A Hub that refuses the token: 401 to every request."""

    def _refuse(self):
        body = b'{"error": "Invalid credentials in Authorization header"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_PUT = _refuse

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("failure", ["no network", "bad token"])
def test_a_failed_upload_is_one_line_and_keeps_the_staged_folder(converted, failure, monkeypatch, capsys):
    """Through huggingface_hub's own client (no HfApi stub): a dead endpoint, a refused token."""
    import tempfile

    server = None
    if failure == "bad token":
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHub)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    else:
        endpoint = "http://127.0.0.1:9"  # nothing listens
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    before = set(Path(tempfile.gettempdir()).glob("dseqjepa-push-*"))
    try:
        assert main(["push", str(converted), "--repo-id", REPO_ID]) == 1
    finally:
        if server is not None:
            server.shutdown()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"dseqjepa push: error: upload to {REPO_ID} failed: ")
    assert ("no connection to http://127.0.0.1:9" if failure == "no network" else "authentication refused (HTTP 401)") in err
    [kept] = set(Path(tempfile.gettempdir()).glob("dseqjepa-push-*")) - before
    assert f"the staged folder is kept: {kept / 'staged'} " in err
    assert set(path.name for path in (kept / "staged").iterdir()) == STAGED_FILES
    shutil.rmtree(kept)
