"""Suite-wide settings: one torch thread per test process.

The suite runs with `pytest -n 2` on 2-core machines; tiny models on two threads per process
oversubscribe the cores and run many times slower than on one.
"""

import torch

torch.set_num_threads(1)


def pytest_configure(config):
    # Marks of transformers' common test files (tests/test_transformers_common.py); its conftest registers them there.
    for mark in ("accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "torch_compile_test",
                 "slow"):
        config.addinivalue_line("markers", f"{mark}: set by transformers' common tests")
