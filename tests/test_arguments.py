"""Arguments bounded before anything loads (issue 20 item 4): every numeric option of every command has a
range, shown in its --help line and in the refusal; output paths that are a file where a folder is expected
(or the reverse) are one line. The fuzz campaign's signatures each have a case here."""

from __future__ import annotations

import argparse
import re

import pytest
from PIL import Image

from dseqjepa_cli import COMMANDS, build_parser, main
from dseqjepa_hub import default_model_path
from dseqjepa_hub.application import loading


def actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from actions(child)
        else:
            yield action


def command_parser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


NUMERIC = [(command, action) for command in COMMANDS for action in actions(command_parser(command))
           if action.type is int or action.type is float or getattr(action.type, "bounds", None)]


def test_every_numeric_option_has_a_range():
    unbounded = [f"{command} {action.option_strings}" for command, action in NUMERIC if action.type in (int, float)]
    assert not unbounded, f"options parsed with a bare int or float (no range): {unbounded}"
    assert len(NUMERIC) > 25


@pytest.mark.parametrize("command, action", NUMERIC, ids=[f"{c} {a.option_strings[0] if a.option_strings else a.dest}"
                                                         for c, a in NUMERIC])
def test_each_range_is_in_the_help_and_in_the_refusal(command, action):
    assert action.type.bounds in action.help
    low, high = (float(v) for v in action.type.bounds.split(" in ")[1].strip("[]()").split(", "))
    for text in (str(int(high) + 1) if "integer" in action.type.bounds else str(high * 2 + 1),
                 "99999999999999999999", "nan", "abc", "1e309"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected an? (integer|number) in"):
            action.type(text)
    assert action.type(str(int(high)) if "integer" in action.type.bounds else str(high)) == high


def usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines  # one line, not argparse's usage block first
    assert lines[0].endswith(f"(`dseqjepa {argv[0]} --help` lists the options)"), lines
    return lines[0]


@pytest.mark.parametrize("argv, words", [
    (["regions", "x.png", "--batch-size", "99999999999999999999"], "--batch-size: expected an integer in [1, 4096]"),
    (["embed", "x.png", "--out", "e.npy", "--batch-size", "0"], "--batch-size: expected an integer in [1, 4096]"),
    (["export", "timm", "m", "--out", "o", "--image-size", "100000"], "--image-size: expected an integer in [1, 8192]"),
    (["regions", "x.png", "--size", "100000"], "--size: expected an integer in [1, 8192]"),
    (["regions", "x.png", "--num-regions", "1000000000"], "--num-regions: expected an integer in [1, 1024]"),
    (["visualize", "x.png", "--kind", "clusters", "--clusters", "0"], "--clusters: expected an integer in"),
    (["visualize", "x.png", "--kind", "similarity", "--query", "3;4"], "--query: expected 'cls' or ROW,COL"),
    (["eval", "--data", "d", "--task", "knn", "--temperature", "nan"], "--temperature: expected a number in (0, 100]"),
    (["eval", "--data", "d", "--task", "knn", "--out", "result.txt"], "--out: result.txt: expected a file name ending in .json"),
    (["export", "onnx", "m", "--out", "m.onnx", "--atol", "inf"], "--atol: expected a number in [0, 1]"),
    (["export", "timm", "m", "--out", "a\x00b"], "--out: expected a path"),
    (["convert", "c.pth", "--format", "timm", "--out", ""], "--out: expected a path"),
])
def test_refused_when_parsed_before_anything_loads(argv, words, capsys):
    assert words in usage_error(argv, capsys)


def test_an_output_folder_that_is_a_file_and_the_reverse_are_one_line(tmp_path, capsys):
    """`regions --out EXISTING_FILE` used to end in NotADirectoryError; `visualize --out` holding a NUL byte in
    ValueError."""
    existing = tmp_path / "existing.txt"
    existing.write_text("x")
    for command in (["regions", "x.png"], ["visualize", "x.png", "--kind", "saliency"]):
        assert "is a file; expected a folder" in usage_error([*command, "--out", str(existing)], capsys)
        assert "expected a path" in usage_error([*command, "--out", "a\x00b"], capsys)
    folder = tmp_path / "out.npy"
    folder.mkdir()
    assert "is a folder; expected a file name" in usage_error(["embed", "x.png", "--out", str(folder)], capsys)
    assert "is a file; expected a folder" in usage_error(["convert", "c.pth", "--format", "timm", "--out", str(existing)],
                                                         capsys)


@pytest.mark.parametrize("size, words", [("8", "at least 16 .2 patches a side"), ("4096", "262,144 tokens an image")])
def test_sizes_below_two_patches_or_above_the_token_limit_are_refused_before_the_model_loads(
    size, words, tmp_path, capsys, monkeypatch
):
    """`--size 4096` used to run for minutes (262,144 tokens at the bundled model's patch 8); below 2 patches the saliency had no grid."""
    Image.new("RGB", (40, 40)).save(tmp_path / "x.png")
    loaded = []
    original = loading.DSeqJEPAModel.from_pretrained
    monkeypatch.setattr(loading.DSeqJEPAModel, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loaded.append(1) or original.__func__(cls, *a, **k)))
    code = main(["regions", str(tmp_path / "x.png"), "--size", size, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "--size" in err, err
    assert re.search(words, err), err
    assert not loaded and not (tmp_path / "out").exists()


def test_export_image_size_is_checked_before_the_weights_load(tmp_path, capsys):
    """`export timm --image-size 100000` used to allocate 40 GB; within the parse range, the token limit refuses it."""
    code = main(["export", "timm", str(default_model_path()), "--out", str(tmp_path / "t"),
                 "--image-size", "8192"])
    err = capsys.readouterr().err
    assert code == 1 and "--image-size" in err and "tokens" in err, err
    assert not (tmp_path / "t").exists()


def test_option_ranges_mirror_the_core_limits():
    """dseqjepa_options cannot import the remote-code core: its copies of the core's limits are checked here."""
    import dseqjepa_options
    from dseqjepa_hub.image_processing_dseqjepa import MAX_SIDE
    from dseqjepa_hub.regions import MAX_REGIONS

    assert dseqjepa_options.INPUT_SIZES[1] == MAX_SIDE and dseqjepa_options.NUM_REGIONS[1] == MAX_REGIONS


def test_a_folder_walk_that_skipped_files_exits_1(tmp_path, capsys):
    """A dangling link in a folder used to give exit 0 while an unreadable file gave 1."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 10, 10)).save(folder / "a.png")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    code = main(["regions", str(folder), "--out", str(tmp_path / "out"), "--num-workers", "0"])
    assert code == 1 and "gone.jpg: dangling symbolic link" in capsys.readouterr().err
    assert (tmp_path / "out" / "a.regions.jpg").is_file()
