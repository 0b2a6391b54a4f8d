"""Suite-wide settings: one torch thread per test process.

The suite runs with `pytest -n 2` on 2-core machines; tiny models on two threads per process
oversubscribe the cores and run many times slower than on one.
"""

import torch

torch.set_num_threads(1)
