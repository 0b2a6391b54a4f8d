"""Suite-wide settings and fixtures: one torch thread per test process, the data kit's scenes.

The suite runs with `pytest -n 2` on 2-core machines; tiny models on two threads per process
oversubscribe the cores and run many times slower than on one.
"""

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread in every test, whatever the test before it left."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_scenes_or_skip(out, **sizes) -> Path:
    """The data kit's scenes (built from the machine's Debian packages); the test is skipped where they are missing."""
    from dseqjepa_train.datakit import DataKitError, build_scenes

    try:
        return build_scenes(out, **sizes)
    except DataKitError as error:
        pytest.skip(f"the data kit's packages are not installed here: {error}")


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> Path:
    """The scenes at the bundled model's size (read only: shared by the session)."""
    return build_scenes_or_skip(tmp_path_factory.mktemp("kit") / "scenes", num_train=16, num_val=2, image_size=96)


def pytest_configure(config):
    # Marks of transformers' common test files (tests/test_transformers_common.py); its conftest registers them there.
    for mark in ("accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "torch_compile_test",
                 "slow"):
        config.addinivalue_line("markers", f"{mark}: set by transformers' common tests")
