"""One error class at every public door, and a model folder checked before use: each signature a fuzz
campaign found (issue 20) as a test. Damaged folders are copies of a tiny model folder; the damage is
applied to one file, and every door is tried: the loader (what the commands use), `from_pretrained` of
every class, the Auto classes and both pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModel, pipeline

from dseqjepa_hub import (
    DSeqJEPABackbone,
    DSeqJEPAConfig,
    DSeqJEPAForImageClassification,
    DSeqJEPAImageProcessor,
    DSeqJEPAImageProcessorPil,
    DSeqJEPAModel,
)
from dseqjepa_hub.application.loading import load_model
from dseqjepa_hub.errors import ModelLoadError, NonFiniteOutputError
from dseqjepa_hub.image_io import ImageLoadError

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pristine")
    torch.manual_seed(0)
    model = DSeqJEPAModel(DSeqJEPAConfig(**TINY))
    model.save_pretrained(folder)
    DSeqJEPAImageProcessor.from_model_config(model.config).save_pretrained(folder)
    return folder


@pytest.fixture
def folder(pristine, tmp_path) -> Path:
    copy = tmp_path / "model"
    copy.mkdir()
    for file in pristine.iterdir():
        if file.is_file():
            (copy / file.name).write_bytes(file.read_bytes())
    return copy


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.new("RGB", (48, 40), (200, 30, 10)).save(path)
    return path


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_tensors(folder: Path, edit) -> None:
    save_file(edit(load_file(folder / "model.safetensors")), folder / "model.safetensors")


# Each damage with the words the refusal must hold. Those marked `found` were found by the fuzz campaign
# to escape (a traceback, minutes of work, or exit 0 with random weights) before this issue.
CONFIG_DAMAGE = {  # found: AttributeError, storage overflow, the sin-cos embedding's error, 11 GB, unbounded memory
    "dtype nonsense": ({"dtype": "nonsense"}, "dtype"),
    "dtype an int": ({"dtype": 3}, "dtype"),
    "hidden_size 1e9": ({"hidden_size": 10**9}, "GiB"),
    "image_size 1e9": ({"image_size": 10**9}, "tokens"),
    "hidden_size 130": ({"hidden_size": 130, "num_attention_heads": 2}, "divisible by 4"),
    "num_hidden_layers 1e9": ({"num_hidden_layers": 10**9}, "GiB"),
    "num_regions 1e9": ({"num_regions": 10**9}, "num_regions"),
    "num_hidden_layers a string": ({"num_hidden_layers": "three"}, "num_hidden_layers"),
    "a list for a size": ({"patch_size": [8]}, "patch_size"),
    "architectures a number": ({"architectures": -81}, "architectures"),  # found by tests/fuzzing.py: TypeError
}
PROCESSOR_DAMAGE = {  # found: tracebacks inside resize / normalize, minutes at 4096, unhashable list at run time
    "size 0": ({"size": {"height": 0, "width": 0}}, "size"),
    "negative size": ({"size": {"height": -32, "width": 32}}, "size"),
    "size 100000": ({"size": {"height": 100000, "width": 100000}}, "size"),
    "a string mean": ({"image_mean": "0.5"}, "image_mean"),
    "a five-element std": ({"image_std": [0.5] * 5}, "image_std"),
    "a zero std": ({"image_std": [0.0, 0.0, 0.0]}, "image_std"),
    "a list for resample": ({"resample": [3]}, "resample"),
    "a list for a flag": ({"do_resize": [1]}, "do_resize"),
}
WEIGHTS_DAMAGE = {  # found: exit 0 / a model with random weights, only transformers' "newly initialized" note
    "no tensors": (lambda tensors: {}, "lacks|no tensors"),
    "a block missing": (lambda tensors: {k: v for k, v in tensors.items() if not k.startswith("blocks.1.")},
                        "lacks|blocks"),
    "an extra block": (lambda tensors: {**tensors, **{k.replace("blocks.1.", "blocks.2."): v.clone() for k, v in
                                                       tensors.items() if k.startswith("blocks.1.")}},
                       "no place|blocks"),
}


def damage(folder: Path, kind: str) -> str:
    if kind in CONFIG_DAMAGE:
        changes, words = CONFIG_DAMAGE[kind]
        edit_json(folder / "config.json", **changes)
    elif kind in PROCESSOR_DAMAGE:
        changes, words = PROCESSOR_DAMAGE[kind]
        edit_json(folder / "preprocessor_config.json", **changes)
    else:
        edit, words = WEIGHTS_DAMAGE[kind]
        edit_tensors(folder, edit)
    return words


ALL_DAMAGE = [*CONFIG_DAMAGE, *PROCESSOR_DAMAGE, *WEIGHTS_DAMAGE]


@pytest.mark.parametrize("kind", ALL_DAMAGE)
def test_the_loader_refuses_a_damaged_folder_before_building_anything(folder, kind, monkeypatch):
    words = damage(folder, kind)
    monkeypatch.setattr(DSeqJEPAModel, "__init__", lambda *a, **k: pytest.fail("built before checking"))
    with pytest.raises(ModelLoadError, match=words):
        load_model(folder)


DOORS = {
    "DSeqJEPAModel": lambda f: DSeqJEPAModel.from_pretrained(f),
    "DSeqJEPAForImageClassification": lambda f: DSeqJEPAForImageClassification.from_pretrained(f),
    "DSeqJEPABackbone": lambda f: DSeqJEPABackbone.from_pretrained(f),
    "AutoModel": lambda f: AutoModel.from_pretrained(f),
    "saliency-ranking": lambda f: pipeline("saliency-ranking", model=str(f)),
    "image-feature-extraction": lambda f: pipeline("image-feature-extraction", model=str(f)),
}


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("kind", [*CONFIG_DAMAGE, *WEIGHTS_DAMAGE])
def test_every_from_pretrained_raises_the_one_class_with_the_original_chained(folder, kind, door):
    words = damage(folder, kind)
    with pytest.raises(ModelLoadError, match=words) as raised:
        DOORS[door](folder)
    assert raised.value.__cause__ is not None or "lacks" in str(raised.value) or "no place" in str(raised.value)


@pytest.mark.parametrize("door", [DSeqJEPAImageProcessor.from_pretrained, DSeqJEPAImageProcessorPil.from_pretrained,
                                  AutoImageProcessor.from_pretrained,
                                  lambda f: pipeline("saliency-ranking", model=str(f))])
@pytest.mark.parametrize("kind", sorted(PROCESSOR_DAMAGE))
def test_a_damaged_preprocessor_config_is_refused_at_load_by_every_door(folder, kind, door):
    words = damage(folder, kind)
    with pytest.raises(ModelLoadError, match=words):
        door(folder)


@pytest.mark.parametrize("task", ["saliency-ranking", "image-feature-extraction"])
def test_a_processor_whose_inputs_the_model_cannot_take_is_refused_when_the_pipeline_is_made(folder, task):
    """Found by tests/fuzzing.py: a 3 x 3 size passed every check of its own and failed in the forward."""
    edit_json(folder / "preprocessor_config.json", size={"height": 3, "width": 3})
    with pytest.raises(ModelLoadError, match="multiples of config.json's patch size 8"):
        pipeline(task, model=str(folder))


def test_configs_from_pretrained_raise_the_one_class(folder):
    (folder / "config.json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match="not a valid JSON file") as raised:
        DSeqJEPAConfig.from_pretrained(folder)
    assert isinstance(raised.value.__cause__, OSError)


def test_the_saliency_pipeline_refuses_a_model_of_another_type(folder, photo):
    """With model_type "vit" the pipeline used to fail with an AttributeError inside its forward (the folder's
    pipeline is then remote code: transformers no longer knows it as this package's)."""
    edit_json(folder / "config.json", model_type="vit")
    with pytest.raises(ModelLoadError, match="needs a DSeq-JEPA model"):
        pipeline("saliency-ranking", model=str(folder), trust_remote_code=True)(str(photo))


@pytest.mark.parametrize("task", ["saliency-ranking", "image-feature-extraction"])
def test_nan_weights_never_give_a_result_in_the_pipelines(folder, photo, task):
    """The saliency pipeline returned NaN scores for NaN weights (the CLI refused the same folder)."""
    edit_tensors(folder, lambda tensors: {k: torch.full_like(v, float("nan")) if k == "norm.weight" else v
                                          for k, v in tensors.items()})
    with pytest.raises(NonFiniteOutputError):
        pipeline(task, model=str(folder))(str(photo))


def write_truncated_qoi(path: Path) -> Path:
    full = path.with_name("full.qoi")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(full, "QOI")
    path.write_bytes(full.read_bytes()[:30])
    return path


@pytest.mark.parametrize("task", ["saliency-ranking", "image-feature-extraction"])
def test_both_pipelines_decode_files_through_the_package(pristine, photo, tmp_path, task):
    """image-feature-extraction used to open files with transformers' loader: raw Pillow exceptions (an
    IndexError for a truncated QOI) and Pillow's own bomb limit instead of the package's."""
    runner = pipeline(task, model=str(pristine))
    assert runner(str(photo))  # a good file gives a result
    with pytest.raises(ImageLoadError, match="bad.qoi: truncated or corrupt image data .IndexError"):
        runner(str(write_truncated_qoi(tmp_path / "bad.qoi")))
    Image.new("RGB", (15000, 13000)).save(tmp_path / "large.png")  # 195 MP: over Pillow's 179 MP, under ours
    assert runner(str(tmp_path / "large.png"))


def test_other_models_keep_transformers_pipelines():
    """The package's decoding is for DSeq-JEPA models only: the class transformers registered is the base."""
    from transformers.pipelines import PIPELINE_REGISTRY, ImageFeatureExtractionPipeline

    served = PIPELINE_REGISTRY.supported_tasks["image-feature-extraction"]["impl"]
    assert issubclass(served, ImageFeatureExtractionPipeline)
    assert served.preprocess is not ImageFeatureExtractionPipeline.preprocess


def test_a_shard_index_naming_files_outside_its_folder_is_refused(folder, tmp_path):
    """`../../etc/passwd` in an index used to reach torch's unpickler (IndexError)."""
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"norm.weight": "../../etc/passwd"}}))
    with pytest.raises(ModelLoadError, match="outside its folder"):
        load_model(folder)



def test_convert_refuses_a_shard_index_naming_files_outside_its_folder(tmp_path):
    """`convert` of an index naming `../../etc/passwd` (a `.bin` beside it) used to end in an IndexError inside
    torch's weights-only unpickler."""
    from dseqjepa_convert.loading import ConversionError, load_hf_folder_state, load_tensor_file

    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"w": "../../etc/passwd"}}))
    with pytest.raises(ConversionError, match="outside its folder"):
        load_hf_folder_state(tmp_path)
    (tmp_path / "garbage.bin").write_bytes(b"\x80\x02}q\x00(X\x01\x00\x00\x00ah")  # a pickle cut short
    with pytest.raises(ConversionError, match="not a readable checkpoint"):
        load_tensor_file(tmp_path / "garbage.bin")


def test_a_head_of_another_size_may_be_replaced_but_never_the_encoder(tmp_path):
    """ignore_mismatched_sizes re-initialises a classifier head (fine-tuning); encoder tensors of another shape are
    refused instead of initialised at random."""
    torch.manual_seed(0)
    DSeqJEPAForImageClassification(DSeqJEPAConfig(**TINY, num_labels=2)).save_pretrained(tmp_path / "c")
    model = DSeqJEPAForImageClassification.from_pretrained(tmp_path / "c", num_labels=3, ignore_mismatched_sizes=True)
    assert model.classifier.out_features == 3
    with pytest.raises(ModelLoadError, match="other shapes: dseqjepa.blocks.0.mlp.fc1.bias"):
        DSeqJEPAForImageClassification.from_pretrained(tmp_path / "c", intermediate_size=128,
                                                       ignore_mismatched_sizes=True)
