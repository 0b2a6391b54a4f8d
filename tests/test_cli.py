"""The `dseqjepa` command itself: `info`, `--version`, `python -m` entry points, and each command's
choices against what the library implements (the values shared through dseqjepa_options, so that --help
imports no torch)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from dseqjepa_cli import COMMANDS, build_parser, main
from dseqjepa_hub import PRESETS, DSeqJEPAConfig, DSeqJEPAModel

REPO = Path(__file__).resolve().parents[1]
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def run_module(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m ...` in a fresh process, offline (a name that is not a folder must not reach the network)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def info_json(model: str, capsys) -> dict:
    assert main(["info", model, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def expected_summary(config: DSeqJEPAConfig) -> dict:
    """What `info --json` must say, from a real model (weights allocated) built from `config`."""
    model = DSeqJEPAModel(config)
    grid = config.image_size // config.patch_size
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "patch_grid": f"{grid}x{grid}",
        "tokens": grid * grid + 1,  # the CLS token
    }


def test_info_on_a_saved_model_folder(tmp_path, capsys):
    config = DSeqJEPAConfig(**TINY)
    torch.manual_seed(0)
    DSeqJEPAModel(config).save_pretrained(tmp_path / "model")
    summary = info_json(str(tmp_path / "model"), capsys)
    assert {key: summary[key] for key in ("parameters", "patch_grid", "tokens")} == expected_summary(config)
    assert (summary["patch_grid"], summary["tokens"]) == ("4x4", 17)
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    for key, value in summary["config"].items():
        assert value == getattr(config, key), key
        if key in saved:
            assert value == saved[key], key
    # The printed config builds the same model again.
    assert expected_summary(DSeqJEPAConfig(**summary["config"]))["parameters"] == summary["parameters"]

    # Text form: the same numbers, then one "key: value" line per config field.
    assert main(["info", str(tmp_path / "model")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"DSeq-JEPA encoder: {summary['parameters']:,} parameters, 4x4 patches, 17 tokens"
    assert lines[1:] == [f"  {key}: {value}" for key, value in sorted(summary["config"].items())]


def test_info_reads_no_weights(tmp_path, capsys):
    """A folder with config.json alone (no weights) is enough; a different config, a different count."""
    config = DSeqJEPAConfig(**{**TINY, "image_size": 48, "hidden_size": 48, "num_hidden_layers": 3}, use_cls_token=False)
    config.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")]
    summary = info_json(str(tmp_path), capsys)
    model = DSeqJEPAModel(config)
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert (summary["patch_grid"], summary["tokens"]) == ("6x6", 36)  # no CLS token
    assert summary["config"]["use_cls_token"] is False and summary["config"]["hidden_size"] == 48


def test_info_on_a_preset(capsys):
    summary = info_json("vit_tiny_patch16_224", capsys)
    config = DSeqJEPAConfig.from_preset("vit_tiny_patch16_224")
    assert {key: summary[key] for key in ("parameters", "patch_grid", "tokens")} == expected_summary(config)
    assert (summary["patch_grid"], summary["tokens"]) == ("14x14", 197)
    assert summary["config"]["hidden_size"] == 192 and summary["config"]["num_hidden_layers"] == 12


def test_info_on_a_missing_folder_is_one_line_and_exit_1(tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    assert main(["info", str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dseqjepa info: error: ") and str(missing) in lines[0]
    assert "Traceback" not in captured.err

    # The same from a fresh process, where nothing else (warnings, logging) may add lines either.
    done = run_module("dseqjepa_cli", "info", str(missing))
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dseqjepa info: error: "), done.stderr


def test_info_on_a_missing_relative_name_is_one_line(tmp_path):
    done = run_module("dseqjepa_cli", "info", "no_such_model", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dseqjepa info: error: "), done.stderr


def test_version_is_the_installed_distribution(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"dseqjepa {version('dseqjepa-hub')}"


@pytest.mark.parametrize("module", ["dseqjepa_hub", "dseqjepa_cli"])
def test_python_m_help(module):
    done = run_module(module, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: dseqjepa ")
    listed = re.findall(r"^    (\w[\w-]*)\s", done.stdout, flags=re.MULTILINE)
    assert listed == list(COMMANDS)


def choice_actions(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path of sub-commands, dest, choices) of every argument with choices, sub-commands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield path, action.dest, tuple(action.choices)
            for name, sub in action.choices.items():
                yield from choice_actions(sub, (*path, name))
        elif action.choices is not None:
            yield path, action.dest, tuple(action.choices)


def library_choices() -> dict[tuple[tuple[str, ...], str], tuple]:
    """What the library implements for each (sub-command path, dest) of the CLI: its tables of readers,
    exporters and builders, and for plain lists the value the library module reads (from dseqjepa_options)."""
    import dseqjepa_convert
    from dseqjepa_convert import release, training_checkpoint
    from dseqjepa_hub.application import embed_job, feature_maps, regions_job, visualize_job
    from dseqjepa_train import datakit, evaluation
    from dseqjepa_train.evaluation import features

    assert tuple(release.ENCODER_KEYS) == tuple(training_checkpoint.ENCODER_DIRS)
    exporters = tuple(name.removeprefix("export_") for name in dseqjepa_convert.__all__ if name.startswith("export_"))
    builders = tuple(name.removeprefix("build_").replace("_", "-") for name in datakit.__all__ if name.startswith("build_"))
    devices = tuple(kind for kind in ("cpu", "cuda") if torch.device(kind).type == kind)
    return {
        (("regions",), "device"): devices,
        (("regions",), "overlay_format"): tuple(regions_job.OVERLAY_SAVE_OPTIONS),
        (("embed",), "device"): devices,
        (("embed",), "pool"): tuple(embed_job.POOLS),
        (("eval",), "task"): tuple(evaluation.TASKS),
        (("eval",), "layers"): tuple(features.LAYER_CHOICES),
        (("convert",), "fmt"): tuple(sorted(dseqjepa_convert.READERS)),
        (("convert",), "encoder"): tuple(release.ENCODER_KEYS),
        (("export",), "target"): exporters,
        (("data",), "data_command"): ("build",),
        (("data", "build"), "dataset"): builders,
        (("visualize",), "device"): devices,
        (("visualize",), "kind"): tuple(visualize_job.KINDS),
        (("visualize",), "method"): tuple(feature_maps.CLUSTER_METHODS),
        (("demo",), "device"): devices,
        **{((command,), "quantize"): ("int8",) for command in ("regions", "embed", "visualize")},  # the method quantize_model implements
    }


def test_every_commands_choices_equal_the_librarys():
    found = {}
    for command in COMMANDS:
        root = build_parser(command)
        for path, dest, choices in choice_actions(root):
            if path == () and dest == "command":
                assert choices == tuple(COMMANDS)
                continue
            if path[0] == command:  # the other commands have no arguments in this parser
                found[path, dest] = choices
    expected = library_choices()
    assert set(found) == set(expected), "a command gained or lost an argument with choices: map it to the library here"
    for key, choices in found.items():
        assert sorted(choices) == sorted(expected[key]), key


def test_the_library_reads_the_option_values_it_implements_from_dseqjepa_options():
    """One place for each value: the library modules hold the option module's objects, not copies of them,
    and the remote-code core (which cannot import it) agrees with the CLI's mirror of its default."""
    import dseqjepa_options as options
    from dseqjepa_convert import onnx_export, verify
    from dseqjepa_hub import image_io
    from dseqjepa_hub.application import embed_job, feature_maps, loading, regions_job, visualize_job
    from dseqjepa_train import evaluation
    from dseqjepa_train.evaluation import features

    assert embed_job.POOLS is options.EMBED_POOLS
    assert evaluation.TASKS is options.EVAL_TASKS
    assert features.LAYER_CHOICES is options.EVAL_LAYERS
    assert visualize_job.KINDS is options.VISUALIZE_KINDS
    assert feature_maps.CLUSTER_METHODS is options.CLUSTER_METHODS
    assert regions_job.DEFAULT_MAX_SIDE is visualize_job.DEFAULT_MAX_SIDE is options.DRAWING_MAX_SIDE
    assert onnx_export.TOLERANCE is options.ONNX_TOLERANCE
    assert verify.TOLERANCE is options.CONVERSION_TOLERANCE
    assert image_io.DEFAULT_MAX_PIXELS == options.DEFAULT_MAX_PIXELS
    assert loading.DEFAULT_MODEL == options.DEFAULT_MODEL
    assert tuple(sorted(options.CONVERT_FORMATS)) == options.CONVERT_FORMATS  # listed as --help lists them
    defaults = {}
    for command in ("regions", "visualize", "export", "embed"):
        root = build_parser(command)
        sub = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        defaults[command] = {action.dest: action.default for action in sub._actions}
    assert defaults["regions"]["max_side"] == defaults["visualize"]["max_side"] == options.DRAWING_MAX_SIDE
    assert defaults["export"]["atol"] == options.ONNX_TOLERANCE
    assert defaults["embed"]["max_pixels"] == image_io.DEFAULT_MAX_PIXELS


def test_names_in_help_texts_exist():
    """Shipped config names listed by `train --help` and preset names in any help text."""
    from dseqjepa_train.config import CONFIG_DIR

    texts = []
    for command in COMMANDS:
        parser = build_parser(command)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
        texts += [sub.description or ""] + [action.help or "" for action in sub._actions]
        if command == "train":
            config_help = next(action.help for action in sub._actions if action.dest == "config")
            listed = re.search(r"shipped config name \(([^)]*)\)", config_help).group(1).split(", ")
            assert sorted(listed) == sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))
    presets = set(re.findall(r"vit_\w+_patch\d+_\d+", " ".join(texts)))
    assert presets and presets <= set(PRESETS)
