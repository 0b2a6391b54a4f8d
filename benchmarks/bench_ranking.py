"""Overhead of the whole region ranking over the plain forward pass.

    python benchmarks/bench_ranking.py                          # CPU, ViT-B/16, batch 32
    python benchmarks/bench_ranking.py --device cuda --batch-size 256 --repeats 20

Three variants run interleaved in one process (so drift of the machine hits them alike), all
under torch.inference_mode on the same random pixels:
  forward   model(pixel_values)                               the plain forward pass
  saliency  model(pixel_values, output_saliency=True)         + the saliency map, same pass
  ranking   rank_regions(model, pixel_values)                 + extract_regions + region embeddings
and, alone, with --post-repeats repeats, the two pieces of work that `ranking` adds to the plain
forward: `saliency ops` (model.saliency_from_block: the final norm on one block's output and the
query product, computed inside the same pass) and `post only` (`regions_from_outputs`:
extract_regions + region embeddings). On a busy machine the noise of a forward pass can exceed
the whole overhead; these rows bound it directly.
Prints the median seconds per batch and each variant's overhead over the plain forward. With
--device cuda, `ranking` runs under torch.cuda.set_sync_debug_mode("error"), so a host
synchronisation anywhere inside it raises.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import transformers

from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAModel
from dseqjepa_hub.regions import rank_regions, regions_from_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit_base_patch16_224")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--post-repeats", type=int, default=50)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args()

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = DSeqJEPAConfig.from_preset(args.preset)
    model = DSeqJEPAModel(config).to(device=device, dtype=dtype).eval()
    pixel_values = torch.randn(args.batch_size, 3, config.image_size, config.image_size, device=device, dtype=dtype)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def without_host_sync(function):
        def run():
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("error")
            try:
                return function()
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")

        return run

    variants = {
        "forward": lambda: model(pixel_values=pixel_values),
        "saliency": lambda: model(pixel_values=pixel_values, output_saliency=True),
        "ranking": without_host_sync(lambda: rank_regions(model, pixel_values)),
    }
    times = {name: [] for name in variants}
    with torch.inference_mode():
        for run in variants.values():  # warm-up
            run()
        synchronize()
        for _ in range(args.repeats):
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                synchronize()
                times[name].append(time.perf_counter() - start)
        outputs = model(pixel_values=pixel_values, output_saliency=True, output_hidden_states=True)
        block_output = outputs.hidden_states[config.saliency_layer + 1]  # (B, 1 + N, D)
        pieces = {
            "saliency ops": lambda: model.saliency_from_block(block_output, config.grid_size),
            "post only": without_host_sync(lambda: regions_from_outputs(outputs, config)),
        }
        for name, run in pieces.items():
            run()
            synchronize()
            times[name] = []
            for _ in range(args.post_repeats):
                start = time.perf_counter()
                run()
                synchronize()
                times[name].append(time.perf_counter() - start)

    where = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {where}")
    print(f"{args.preset}, batch {args.batch_size}, {args.dtype}, median of {args.repeats} ({args.post_repeats} for the pieces)")
    base = statistics.median(times["forward"])
    for name, values in times.items():
        median = statistics.median(values)
        share = median / base if name in pieces else median / base - 1
        print(f"  {name:9s} {median * 1000:10.1f} ms/batch   overhead {100 * share:+6.2f}% of forward")


if __name__ == "__main__":
    main()
