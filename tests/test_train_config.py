"""The pretraining config as a strict dataclass: values read as their fields' types, refused in one line
naming the field, saved and loaded back unchanged (tests/test_training_units.py has the shipped configs
and the unknown keys)."""

import dataclasses

import pytest
from huggingface_hub.errors import StrictDataclassFieldValidationError

from dseqjepa_train.config import CONFIG_DIR, ConfigError, TrainConfig, config_from_dict, load_config, save_config

# config.yaml as a run wrote it (save_config of `tiny-cpu --set method=mixed --set grad_clip=null`).
RUN_CONFIG_YAML = """\
model_preset: null
model:
  image_size: 64
  patch_size: 8
  hidden_size: 64
  num_hidden_layers: 4
  num_attention_heads: 4
  intermediate_size: 256
  predictor_hidden_size: 32
  predictor_num_hidden_layers: 2
  predictor_num_attention_heads: 4
method: mixed
lambda_start: 0.0
lambda_end: 1.0
context_mode: gather
release_compat: false
context_scale:
- 0.85
- 1.0
target_scale:
- 0.15
- 0.2
target_aspect_ratio:
- 0.75
- 1.5
num_targets: 4
min_keep: 4
crop_scale:
- 0.3
- 1.0
batch_size: 8
num_workers: 0
epochs: 4.0
warmup_epochs: 1.0
start_lr: 0.0001
lr: 0.001
final_lr: 0.0001
weight_decay: 0.04
final_weight_decay: 0.4
ema_start: 0.996
ema_end: 1.0
betas:
- 0.9
- 0.999
grad_clip: null
precision: fp32
compile: false
seed: 0
checkpoint_every: 2
keep_checkpoints: 3
tensorboard: false
"""


def test_every_field_is_type_checked_whenever_it_is_set():
    """`strict` checks real annotations only (a string annotation passes unchecked)."""
    config = TrainConfig()
    for item in dataclasses.fields(TrainConfig):
        with pytest.raises(StrictDataclassFieldValidationError, match=item.name):
            setattr(config, item.name, object())
    with pytest.raises(StrictDataclassFieldValidationError, match="batch_size"):
        config.batch_size = 0
    with pytest.raises(StrictDataclassFieldValidationError, match="lr"):
        TrainConfig(lr=-1e-3)
    assert TrainConfig(epochs=4, warmup_epochs=1).epochs == 4  # an int is a valid float


@pytest.mark.parametrize(("override", "expected"), [
    ("epochs=3", 3.0),  # int -> float
    ("lr=1e-3", 1e-3),  # YAML reads 1e-3 (no dot) as text
    ("batch_size=16.0", 16),
    ("batch_size='16'", 16),
    ("compile=yes", True),
    ("compile='off'", False),
    ("grad_clip=none", None),
    ("grad_clip=2", 2.0),
    ("model_preset=null", None),
    ("crop_scale=0.5,1", (0.5, 1.0)),
    ("crop_scale=[0.5, 1]", (0.5, 1.0)),
    ("model.layer_norm_eps=1e-5", 1e-5),
    ("model.saliency_layer=1", 1),
])
def test_values_are_read_as_their_fields_types(override, expected):
    key = override.partition("=")[0]
    config = load_config("tiny-cpu", [override])
    value = config.model[key.removeprefix("model.")] if key.startswith("model.") else getattr(config, key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("override", "message"), [
    ("batch_size=8.5", "batch_size: expected int, found 8.5"),
    ("seed=true", "seed: expected int, found True"),
    ("lr=fast", "lr: expected float | int, found 'fast'"),
    ("compile=maybe", "compile: expected bool, found 'maybe'"),
    ("crop_scale=0.5", r"crop_scale: expected tuple\[float, float\], found 0.5"),
    ("crop_scale=[0.1, 0.5, 1]", r"crop_scale: expected tuple\[float, float\], found \[0.1, 0.5, 1\]"),
    ("crop_scale=[0.5, 0.4]", r"crop_scale: expected 0 < low <= high <= 1, found \[0.5, 0.4\]"),
    ("precision=fp16", r"precision: expected one of \('bf16', 'fp32'\), found 'fp16'"),
    ("model_preset=vit_mega", "model_preset: expected one of .* or null, found 'vit_mega'"),
    ("lr=-1", "lr: expected a finite number >= 0, found -1.0"),
    ("lr=nan", "lr: expected a finite number >= 0, found nan"),
    ("epochs=0", "epochs: expected a finite number > 0, found 0.0"),
    ("betas=[0.9, .inf]", r"betas: expected finite numbers, found \(0.9, inf\)"),
    ("ema_end=.nan", "ema_end: expected finite numbers, found nan"),
    ("checkpoint_every=0", "checkpoint_every: expected a positive int, found 0"),
    ("num_workers=-1", "num_workers: expected an int >= 0, found -1"),
    ("model.hidden_size=0", "model.hidden_size: expected a positive int, found 0"),
    ("model.hidden_size=wide", "model.hidden_size: expected int, found 'wide'"),
    ("model.use_cls_token=false", "method .dseq. ranks regions by the CLS token: set model.use_cls_token: true"),
    ("model.num_attention_heads=5", r"model: DSeqJEPAConfig: hidden_size \(64\) must be divisible by num_attention_heads \(5\)"),
    ("model=3", "model: expected a mapping of DSeqJEPAConfig fields, found 3"),
])
def test_wrong_values_are_refused_in_one_line_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message) as raised:
        load_config("tiny-cpu", [override])
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("name", sorted(path.stem for path in CONFIG_DIR.glob("*.yaml")))
def test_a_saved_config_loads_back_equal(tmp_path, name):
    config = load_config(name, ["grad_clip=1", "crop_scale=0.4,1", "model.layer_norm_eps=1e-5"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config
    assert config_from_dict(config.to_dict()) == config  # the copy a checkpoint's trainer state holds
    save_config(load_config(tmp_path / "config.yaml"), tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_text() == (tmp_path / "config.yaml").read_text()


def test_a_config_yaml_written_by_a_run_still_loads_and_saves_the_same(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(RUN_CONFIG_YAML)
    config = load_config(path)
    assert config == load_config("tiny-cpu", ["method=mixed", "grad_clip=null"])
    save_config(config, tmp_path / "saved.yaml")
    added = ("init_from: null\n", "log_every: 10\neval_every: 0\neval_data: null\neval_images: 1000\ncollapse_rank: 1.5\n"
             "collapse_std: 0.05\ncollapse_patience: 3\nstop_on_collapse: false\n")  # the keys added since, at their places
    old = RUN_CONFIG_YAML.replace("crop_scale:\n- 0.3\n- 1.0\n", "crop_scale:\n- 0.3\n- 1.0\nimage_column: image\nstreaming: false\nshuffle_buffer: 1000\n")
    assert old != RUN_CONFIG_YAML
    assert (tmp_path / "saved.yaml").read_text() == added[0] + old + added[1]
