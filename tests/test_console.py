"""The console of the commands: nothing but a one-line summary in a log file, one progress bar on a
terminal, --quiet and --verbose on every command."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from dseqjepa_cli import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "examples" / "images"
DSEQJEPA = [sys.executable, "-m", "dseqjepa_cli"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_quiet_and_verbose(command):
    parser = build_parser(command)
    sub = parser._subparsers._group_actions[0].choices[command]
    options = {option for action in sub._actions for option in action.option_strings}
    assert {"-q", "--quiet", "-v", "--verbose"} <= options


def test_a_log_file_gets_the_summary_line_and_nothing_else(tmp_path):
    """stdout and stderr are files here, as in a log: no bar (each update would be a line), no weight-loading
    bar, no warning; the summary names the count and the folder."""
    out = tmp_path / "regions_out"
    done = subprocess.run([*DSEQJEPA, "regions", str(IMAGES), "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == f"wrote 4 overlay(s) to {out}\n"


def test_quiet_prints_nothing_and_verbose_draws_the_bar(tmp_path, capsys):
    assert main(["regions", str(IMAGES / "coffee.jpg"), "--out", str(tmp_path / "q"), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "q" / "coffee.regions.jpg").is_file()
    assert main(["embed", str(IMAGES / "coffee.jpg"), "--out", str(tmp_path / "e.npy"), "--regions", "-v"]) == 0
    captured = capsys.readouterr()
    assert "embed: 100%" in captured.err
    assert captured.out.splitlines()[-1] == (f"wrote {tmp_path / 'e.npy'}: 1 image(s), pooled (1, 128), regions (1, 5, "
                                             "128), region_valid (1, 5), region_scores (1, 5)")


def run_on_a_terminal(command: list[str], columns: int = 120) -> str:
    """What a person sees: the command with stdout and stderr on a pseudo-terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=REPO)
    os.close(slave)
    seen = b""
    while select.select([master], [], [], 300)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:  # the command ended and closed the terminal
            break
        if not data:
            break
        seen += data
    os.close(master)
    assert process.wait(timeout=60) == 0, seen.decode(errors="replace")
    return seen.decode()


def test_a_terminal_shows_one_progress_bar_then_the_summary(tmp_path):
    seen = run_on_a_terminal([*DSEQJEPA, "regions", str(IMAGES), "--out", str(tmp_path / "out")])
    lines = seen.replace("\r\n", "\n").split("\n")
    assert lines[-2:] == [f"wrote 4 overlay(s) to {tmp_path / 'out'}", ""]
    bar = lines[0]  # one line, redrawn in place with carriage returns
    assert len(lines) == 3 and "Loading weights" not in seen
    states = [state for state in bar.split("\r") if state]
    assert all(state.startswith("regions: ") for state in states)
    done = [int(re.search(r"(\d+)/4", state).group(1)) for state in states]  # redrawn in place, never backwards
    assert done == sorted(done) and done[-1] == 4 and states[-1].startswith("regions: 100%")


@pytest.mark.parametrize("arguments, code", [(["info", "default"], 141), (["info", "default", "--json"], 141),
                                             (["visualize", "--help"], 0)])  # argparse drops a failed help itself
def test_output_into_a_closed_pipe_ends_quietly(arguments, code):
    """`dseqjepa info default | head -1`: the reader is gone before the command writes; no BrokenPipeError
    traceback (not even Python's 'Exception ignored' at exit), exit code 141 as a shell's SIGPIPE would give."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone: every write to the pipe fails with EPIPE
    try:
        done = subprocess.run([*DSEQJEPA, *arguments], stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == code


def test_verbose_says_what_the_job_does_a_line_each_and_no_config_dumps(tmp_path, capsys):
    """--verbose: the model loaded, the work and how it is split, its time; not transformers' information level
    (whole config and processor reprs over dozens of lines). Without --verbose none of it."""
    assert main(["regions", str(IMAGES), "--out", str(tmp_path / "v"), "--batch-size", "3", "--num-workers", "4", "-v"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    assert re.fullmatch(r"model .*default_model: DSeqJEPAModel, 1,214,720 parameters, float32 on cpu; "
                        r"inputs 96x96 px, patch 8", lines[0]), lines
    # 4 images in batches of 3: 2 batches, so 2 of the 4 workers asked for start (one per batch at most)
    assert re.fullmatch(r"regions: 4 image\(s\), batches of 3 on cpu, 2 decoding worker\(s\), \d+ writer thread\(s\)",
                        lines[1]), lines
    assert re.fullmatch(r"regions: 4 image\(s\) done in [0-9.]+ s \([0-9.]+ img/s\), 0 unreadable", lines[2]), lines
    assert len(lines) == 3, lines  # nothing else: no "Model config DSeqJEPAConfig {" and its 40 lines
    assert main(["regions", str(IMAGES), "--out", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().err == ""
    assert main(["embed", str(IMAGES / "coffee.jpg"), "--out", str(tmp_path / "q.npy"), "--quantize", "int8", "-v"]) == 0
    assert "DSeqJEPAModel, 1,214,720 parameters, float32, int8 quantized on cpu" in capsys.readouterr().err  # all of them


def test_pillows_decoder_warnings_are_shown_with_verbose_only(tmp_path, capsys):
    """A TIFF with a malformed metadata tag decodes, with a Pillow UserWarning: not on the default console
    (nothing in it is for the user to do), shown with --verbose."""
    import struct
    import warnings

    from PIL import Image

    image = tmp_path / "tagged.tif"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(image)
    data = bytearray(image.read_bytes())  # little-endian TIFF: the first IFD's offset, its entry count, its entries
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(ifd + 2, ifd + 2 + 12 * struct.unpack_from("<H", data, ifd)[0], 12):
        if struct.unpack_from("<H", data, entry)[0] == 278:  # RowsPerStrip: one value, written as two
            struct.pack_into("<I", data, entry + 4, 2)
    image.write_bytes(bytes(data))
    for flags, shown in (([], False), (["-v"], True)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(["regions", str(image), "--out", str(tmp_path / "out"), "--num-workers", "0", *flags]) == 0
        pillow = [str(warning.message) for warning in seen if warning.filename.endswith("TiffImagePlugin.py")]
        assert bool(pillow) == shown, (flags, pillow)
    capsys.readouterr()


def test_train_draws_its_bar_on_a_terminal_only(tmp_path, capsys):
    """`train` follows the console's rule as the folder jobs do: no bar where stderr is a log file."""
    assert main(["train", "--config", "tiny-cpu", "--data", str(IMAGES), "--output", str(tmp_path / "run"),
                 "--max-steps", "1", "--set", "batch_size=4", "--set", "num_workers=0"]) == 0
    captured = capsys.readouterr()
    assert "train:" not in captured.err and "%|" not in captured.err, captured.err
    assert captured.out.startswith("trained to step 1")
