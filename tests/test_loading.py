"""The one model loader (dseqjepa_hub.application.loading): training runs and checkpoints as the
commands take them, the one validation of a folder's config, image processor and weights, repo ids
from the HF cache. Damaged bundled-model copies through every command: test_faults.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dseqjepa_cli import main
from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAForImageClassification, DSeqJEPAImageProcessor, DSeqJEPAModel
from dseqjepa_hub.application.loading import (
    COMPLETE_MARKER,
    CONTEXT_ENCODER_DIR,
    PREDICTOR_DIR,
    RUN_CHECKPOINTS_DIR,
    TARGET_ENCODER_DIR,
    ModelLoadError,
    load_encoder,
    load_model,
)

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "examples/images/coffee.jpg"


def tiny_config(**overrides) -> DSeqJEPAConfig:
    return DSeqJEPAConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, **overrides)


def save_model_folder(folder: Path, seed: int, model_class=DSeqJEPAModel, **overrides) -> None:
    torch.manual_seed(seed)
    model = model_class(tiny_config(**overrides))
    model.save_pretrained(folder)
    DSeqJEPAImageProcessor.from_model_config(model.config).save_pretrained(folder)


def write_checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    """One checkpoint as the trainer writes it: the encoders as model folders (the target encoder's weights
    seeded by the step, the context encoder's by -step), the predictor, the trainer state, the marker last."""
    checkpoint = run / RUN_CHECKPOINTS_DIR / f"step_{step:06d}"
    save_model_folder(checkpoint / TARGET_ENCODER_DIR, seed=step)
    save_model_folder(checkpoint / CONTEXT_ENCODER_DIR, seed=1000 + step)
    (checkpoint / PREDICTOR_DIR).mkdir()
    torch.save({"step": step}, checkpoint / "trainer_state.pt")
    (checkpoint / "config.yaml").write_text("max_steps: 10\n")
    if complete:
        (checkpoint / COMPLETE_MARKER).write_text(f"{step}\n")
    return checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """Complete checkpoints at steps 3 and 20 (step_000020 sorts after step_000003 by number, as by name) and
    an interrupted one at step 30."""
    root = tmp_path_factory.mktemp("run") / "run"
    for step in (3, 20):
        write_checkpoint(root, step)
    write_checkpoint(root, 30, complete=False)
    return root


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def same_weights(model: DSeqJEPAModel, folder: Path) -> bool:
    expected = weights_of(folder)
    return all(torch.equal(tensor, expected[name]) for name, tensor in model.state_dict().items())


# ----------------------------------------------------------------------------- runs and checkpoints


def test_a_run_loads_the_target_encoder_of_its_newest_complete_checkpoint(run):
    loaded = load_model(run)
    newest = run / RUN_CHECKPOINTS_DIR / "step_000020"
    assert loaded.description == f"{run} (step 20)" and loaded.model.name_or_path == loaded.description
    assert same_weights(loaded.model, newest / TARGET_ENCODER_DIR)
    assert not same_weights(loaded.model, newest / CONTEXT_ENCODER_DIR)
    assert loaded.processor.size == {"height": 32, "width": 32}


def test_a_checkpoint_loads_its_target_encoder(run):
    checkpoint = run / RUN_CHECKPOINTS_DIR / "step_000003"
    loaded = load_model(str(checkpoint))
    assert loaded.description == f"{checkpoint} (step 3)"
    assert same_weights(loaded.model, checkpoint / TARGET_ENCODER_DIR)


def test_incomplete_checkpoints_and_runs_without_one_are_one_line(run, tmp_path):
    with pytest.raises(ModelLoadError, match="step_000030: an incomplete training checkpoint \\(no 'complete' marker"):
        load_model(run / RUN_CHECKPOINTS_DIR / "step_000030")
    write_checkpoint(tmp_path / "young", 5, complete=False)
    with pytest.raises(ModelLoadError, match="young: a training run without a complete checkpoint"):
        load_model(tmp_path / "young")
    raw = tmp_path / "raw" / RUN_CHECKPOINTS_DIR / "step_000001"  # an earlier version's layout: raw state dicts
    raw.mkdir(parents=True)
    (raw / COMPLETE_MARKER).write_text("1\n")
    with pytest.raises(ModelLoadError, match="no target_encoder/ model folder .*--format training"):
        load_model(tmp_path / "raw")


def test_a_folder_holding_config_json_is_a_model_folder_whatever_else_it_holds(run, tmp_path):
    folder = tmp_path / "finished"
    shutil.copytree(run / RUN_CHECKPOINTS_DIR / "step_000003" / TARGET_ENCODER_DIR, folder)
    shutil.copytree(run / RUN_CHECKPOINTS_DIR, folder / RUN_CHECKPOINTS_DIR)
    loaded = load_model(folder)
    assert loaded.description == str(folder) and same_weights(loaded.model, folder)


def test_commands_take_a_run(run, tmp_path, capsys):
    newest = run / RUN_CHECKPOINTS_DIR / "step_000020" / TARGET_ENCODER_DIR
    assert main(["regions", str(IMAGE), "--model", str(run), "--out", str(tmp_path / "regions"), "--json"]) == 0
    assert json.loads((tmp_path / "regions/coffee.regions.json").read_text())["model"] == f"{run} (step 20)"

    assert main(["embed", str(IMAGE), "--model", str(run), "--out", str(tmp_path / "emb.safetensors")]) == 0
    reference = load_encoder(newest)
    processor = DSeqJEPAImageProcessor.from_pretrained(newest)
    from dseqjepa_hub.image_io import load_image

    with torch.no_grad():
        expected = reference(**processor(load_image(IMAGE), return_tensors="pt")).pooler_output
    torch.testing.assert_close(load_file(tmp_path / "emb.safetensors")["pooled"], expected, rtol=1e-5, atol=1e-6)

    capsys.readouterr()
    assert main(["info", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["hidden_size"] == 32

    assert main(["export", "timm", str(run), "--out", str(tmp_path / "timm")]) == 0
    exported = load_file(tmp_path / "timm/model.safetensors")
    assert torch.equal(exported["patch_embed.proj.weight"], weights_of(newest)["patch_embed.proj.weight"])

    assert main(["push", str(run), "--repo-id", "org/tiny", "--dry-run", "--stage-dir", str(tmp_path / "stage"),
                 "--license", "apache-2.0"]) == 0
    assert weights_of(tmp_path / "stage").keys() == weights_of(newest).keys()
    assert all(torch.equal(tensor, weights_of(newest)[name]) for name, tensor in weights_of(tmp_path / "stage").items())


def test_eval_takes_a_run(run, tmp_path):
    from test_evaluation import _tiny_scenes

    data = _tiny_scenes(tmp_path / "scenes")
    out = tmp_path / "knn.json"
    assert main(["eval", str(run), "--data", str(data), "--task", "knn", "--device", "cpu", "--size", "48",
                 "--k", "3", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["model"] == f"{run} (step 20)"


# ----------------------------------------------------------------------------- one validation


@pytest.fixture
def folder(tmp_path) -> Path:
    save_model_folder(tmp_path / "model", seed=0)
    return tmp_path / "model"


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_tensors(path: Path, edit) -> None:
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


DAMAGE = {
    "garbled config.json": (lambda f: (f / "config.json").write_text("{not json"),
                            "config.json: not a readable JSON object"),
    "another model type": (lambda f: edit_json(f / "config.json", model_type="vit"),
                           "config.json: model_type 'vit', expected 'dseqjepa'"),
    "an unknown class": (lambda f: edit_json(f / "config.json", architectures=["DSeqJEPAPredictor"]),
                         "architectures \\['DSeqJEPAPredictor'\\]: expected one of"),
    "a missing tensor": (lambda f: edit_tensors(f / "model.safetensors", lambda t: t.pop("norm.weight")),
                         "model.safetensors: lacks tensors that a DSeqJEPAModel needs: norm.weight"),
    "a tensor no class holds": (lambda f: edit_tensors(f / "model.safetensors",
                                                       lambda t: t.update(extra=torch.zeros(2))),
                                "model.safetensors: holds tensors unaccounted for by DSeqJEPAModel: extra"),
    "a processor off the patch grid": (lambda f: edit_json(f / "preprocessor_config.json",
                                                           size={"height": 36, "width": 36}),
                                       "preprocessor_config.json: gives .* inputs, expected sides that are multiples"),
    "a processor for 4 channels": (lambda f: edit_json(f / "preprocessor_config.json", image_mean=[0.5] * 4,
                                                       image_std=[0.5] * 4),
                                   "preprocessor_config.json: not a readable image processor .image_mean: expected 3 finite numbers"),
    "garbled preprocessor_config.json": (lambda f: (f / "preprocessor_config.json").write_text("]"),
                                         "preprocessor_config.json: not a readable image processor"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "model: no weights"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_folder_is_refused_before_any_allocation(folder, kind, monkeypatch):
    damage, message = DAMAGE[kind]
    damage(folder)
    monkeypatch.setattr(DSeqJEPAModel, "from_pretrained", lambda *a, **k: pytest.fail("allocated before checking"))
    with pytest.raises(ModelLoadError, match=message):
        load_model(folder)


def test_a_folder_without_a_processor_gets_the_configs(folder):
    (folder / "preprocessor_config.json").unlink()
    loaded = load_model(folder)
    assert loaded.processor.size == {"height": 32, "width": 32} and not loaded.processor.do_center_crop


def test_sharded_safetensors_and_a_plain_pickle_load_the_same_weights(folder, tmp_path):
    reference = load_encoder(folder)
    sharded = tmp_path / "sharded"
    reference.save_pretrained(sharded, max_shard_size="20KB")
    DSeqJEPAImageProcessor.from_pretrained(folder).save_pretrained(sharded)
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    assert same_weights(load_encoder(sharded), folder)

    pickled = tmp_path / "pickled"
    shutil.copytree(folder, pickled)
    torch.save(weights_of(folder), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    assert same_weights(load_encoder(pickled), folder)
    edit_json(pickled / "config.json", intermediate_size=128)
    with pytest.raises(ModelLoadError, match="pytorch_model.bin: the weights do not match config.json"):
        load_encoder(pickled)


def test_a_head_loads_as_saved_or_as_its_encoder(tmp_path):
    save_model_folder(tmp_path / "head", seed=1, model_class=DSeqJEPAForImageClassification, num_labels=3)
    head = load_model(tmp_path / "head", as_saved=True).model
    assert type(head) is DSeqJEPAForImageClassification and head.config.num_labels == 3
    encoder = load_encoder(tmp_path / "head")
    assert type(encoder) is DSeqJEPAModel
    assert all(torch.equal(tensor, head.dseqjepa.state_dict()[name]) for name, tensor in encoder.state_dict().items())
    with pytest.raises(ModelLoadError, match="a size preset, not a model folder"):
        load_model("vit_tiny_patch16_224", as_saved=True)


def test_a_file_is_not_a_model_folder(folder):
    with pytest.raises(ModelLoadError, match="config.json: a file, not a model folder"):
        load_model(folder / "config.json")


def test_a_repo_id_loads_from_the_hf_cache_offline(folder, tmp_path, monkeypatch):
    import huggingface_hub
    from test_hub import fill_cache

    cache = tmp_path / "hub"
    fill_cache(folder, cache, "org/tiny")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    loaded = load_model("org/tiny")
    assert loaded.description == "org/tiny" and same_weights(loaded.model, folder)
    with pytest.raises(ModelLoadError, match="cannot load the model 'org/absent'"):
        load_model("org/absent")
    edit_tensors(next(cache.glob("models--org--tiny/snapshots/*/model.safetensors")),
                 lambda t: t.update(extra=torch.zeros(2)))
    with pytest.raises(ModelLoadError, match="holds tensors unaccounted for by DSeqJEPAModel: extra"):
        load_model("org/tiny")


# ----------------------------------------------------------------------------- the predictor beside an encoder


def test_predictor_folder_is_read_through_the_one_config_check(tmp_path):
    """A model folder's predictor/ loads; with no predictor config there is none; a damaged predictor
    config.json (unreadable, another model type, a shape field missing, a value out of range) is one
    ModelLoadError naming that file."""
    from dseqjepa_hub import DSeqJEPAPredictor, DSeqJEPAPredictorConfig
    from dseqjepa_hub.application.loading import load_predictor

    folder = tmp_path / "model"
    save_model_folder(folder, seed=0)
    encoder_config = tiny_config()
    assert load_predictor(folder, encoder_config) is None
    torch.manual_seed(0)
    predictor = DSeqJEPAPredictor(DSeqJEPAPredictorConfig.from_encoder_config(encoder_config))
    predictor.save_pretrained(folder / PREDICTOR_DIR)
    loaded, where = load_predictor(folder, encoder_config)
    assert where == str(folder / PREDICTOR_DIR)
    assert all(torch.equal(tensor, predictor.state_dict()[name]) for name, tensor in loaded.state_dict().items())

    config_path = folder / PREDICTOR_DIR / "config.json"
    saved = json.loads(config_path.read_text())
    damaged = {
        "not JSON": "{",
        "encoder model_type": json.dumps({**saved, "model_type": "dseqjepa"}),
        "hidden_size missing": json.dumps({key: value for key, value in saved.items() if key != "hidden_size"}),
        "negative depth": json.dumps({**saved, "num_hidden_layers": -2}),
    }
    for what, text in damaged.items():
        config_path.write_text(text)
        with pytest.raises(ModelLoadError) as raised:
            load_predictor(folder, encoder_config)
        message = str(raised.value)
        assert str(config_path) in message and "\n" not in message, (what, message)
