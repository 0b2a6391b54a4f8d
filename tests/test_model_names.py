"""How a model is named: `default` (the bundled model) in every command, never sent to the Hub; repo ids
without a network: from the HF cache with no network call, or refused at once in one line."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import huggingface_hub
import pytest

from dseqjepa_cli import main
from dseqjepa_hub import default_model_path
from dseqjepa_hub.application import loading
from dseqjepa_hub.application.loading import ModelLoadError, load_model

REPO = Path(__file__).resolve().parents[1]
IMAGE = REPO / "examples/images/coffee.jpg"


@pytest.fixture
def no_hub(monkeypatch):
    """Any attempt to reach the Hub fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a network call: {args} {kwargs}")

    monkeypatch.setattr(loading, "snapshot_download", refuse)
    monkeypatch.setattr(loading, "get_session", refuse, raising=False)


@pytest.mark.parametrize("command", [
    ["regions", str(IMAGE), "--model", "default", "--out", "{tmp}/regions"],
    ["embed", str(IMAGE), "--model", "default", "--out", "{tmp}/emb.npy"],
    ["visualize", str(IMAGE), "--model", "default", "--kind", "saliency", "--out", "{tmp}/vis"],
    ["info", "default", "--json"],
    ["export", "timm", "default", "--out", "{tmp}/timm"],
    ["push", "default", "--repo-id", "me/bundled", "--dry-run", "--stage-dir", "{tmp}/staged",
     "--license", "apache-2.0"],
])
def test_default_names_the_bundled_model_in_every_command(command, no_hub, tmp_path, capsys):
    assert main([part.format(tmp=tmp_path) for part in command]) == 0, capsys.readouterr().err


def test_eval_and_demo_default_to_the_name():
    from dseqjepa_cli import build_parser

    assert build_parser("eval").parse_args(["eval", "--data", "d", "--task", "knn"]).model == "default"
    assert build_parser("demo").parse_args(["demo"]).model == "default"
    assert build_parser("regions").parse_args(["regions", "x"]).model == "default"


def test_default_loads_the_bundled_folder(no_hub):
    loaded = load_model("default")
    assert loaded.description == str(default_model_path())


def test_info_lists_the_named_models(no_hub, capsys):
    assert main(["info", "--json"]) == 0
    named = json.loads(capsys.readouterr().out)
    assert list(named)[0] == "default" and str(default_model_path()) in named["default"]["what"]
    assert {"vit_base_patch16_224", "vit_tiny_patch16_224"} <= named.keys()
    assert named["default"]["parameters"] == 1_214_720
    assert main(["info"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "default"


# ----------------------------------------------------------------------------- repo ids without a network


class _Hub(http.server.BaseHTTPRequestHandler):
    """A proxy in front of a dead network: 503 to every request, counted."""

    requests: list[str]

    def _answer(self):
        self.requests.append(f"{self.command} {self.path}")
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def dead_hub(monkeypatch):
    _Hub.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield _Hub.requests
    server.shutdown()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    from test_hub import fill_cache

    root = tmp_path / "hub"
    fill_cache(default_model_path(), root, "org/cached")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))
    return root


def test_an_uncached_id_without_a_network_is_one_line_after_one_request(dead_hub, cache, capsys):
    """huggingface_hub alone retries the dead network five times (about 28 s); the loader asks once."""
    assert main(["info", "org/absent"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'org/absent'" in err and str(cache) in err and "HF_HUB_OFFLINE" in err and "does not answer" in err
    assert dead_hub == ["HEAD /"]


def test_a_cached_id_without_a_network_loads_from_the_cache(dead_hub, cache):
    loaded = load_model("org/cached")
    assert loaded.description == "org/cached" and loaded.model.config.hidden_size == 128
    assert dead_hub == ["HEAD /"]  # the probe, nothing else


def test_a_hub_that_never_answers_is_given_up_after_the_probe_timeout(cache, monkeypatch):
    listener = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(loading, "HUB_PROBE_TIMEOUT", 0.2)
    monkeypatch.setattr(loading, "snapshot_download", _cache_only(loading.snapshot_download))
    try:
        assert load_model("org/cached").description == "org/cached"
        with pytest.raises(ModelLoadError, match="not in the HF cache"):
            load_model("org/absent")
    finally:
        listener.close()


def _cache_only(snapshot_download):
    def cached(*args, local_files_only=False, **kwargs):
        assert local_files_only, "a download was attempted"
        return snapshot_download(*args, local_files_only=True, **kwargs)

    return cached


def test_hf_hub_offline_makes_no_network_call_and_names_itself(cache, no_hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(loading, "snapshot_download", _cache_only(huggingface_hub.snapshot_download))
    assert load_model("org/cached").description == "org/cached"
    with pytest.raises(ModelLoadError) as error:
        load_model("org/absent")
    message = str(error.value)
    assert "'org/absent'" in message and str(cache) in message and "HF_HUB_OFFLINE=1 is set" in message
