"""Inference throughput of DSeqJEPAModel against timm's VisionTransformer and transformers' IJepaModel.

    python benchmarks/bench_model.py                       # CPU, fp32, batch 32, ViT-Ti/S/B
    python benchmarks/bench_model.py --device cuda --dtype bfloat16 --sizes base:256 huge14:64

All three models have the same sizes and run interleaved in one process, so that drift of the
machine hits them alike; the table reports the median images/s over the repeats and the ratio
of this project's model to each peer.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import timm
import torch
import transformers
from timm.models.vision_transformer import VisionTransformer
from transformers import IJepaConfig, IJepaModel

from dseqjepa_hub import DSeqJEPAConfig, DSeqJEPAModel

PRESET = {
    "tiny": "vit_tiny_patch16_224",
    "small": "vit_small_patch16_224",
    "base": "vit_base_patch16_224",
    "huge14": "vit_huge_patch14_224",
}


def build_models(size: str, device: str, dtype: torch.dtype, compile_models: bool) -> dict:
    config = DSeqJEPAConfig.from_preset(PRESET[size])
    ours = DSeqJEPAModel(config)
    peer_timm = VisionTransformer(
        img_size=config.image_size, patch_size=config.patch_size, embed_dim=config.hidden_size,
        depth=config.num_hidden_layers, num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size, class_token=True, global_pool="avg",
        fc_norm=False, num_classes=0,
    )
    peer_hf = IJepaModel(IJepaConfig(
        image_size=config.image_size, patch_size=config.patch_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, layer_norm_eps=1e-6,
    ))
    models = {
        "dseqjepa": lambda x, m=ours: m(x).pooler_output,
        "timm": lambda x, m=peer_timm: m.forward_head(m.forward_features(x), pre_logits=True),
        "transformers-ijepa": lambda x, m=peer_hf: m(x).last_hidden_state.mean(1),
    }
    for module in (ours, peer_timm, peer_hf):
        module.to(device=device, dtype=dtype).eval()
    if compile_models:
        models = {name: torch.compile(fn) for name, fn in models.items()}
    return models, config.image_size


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(models: dict, pixels: torch.Tensor, repeats: int, warmup: int, device: str) -> dict[str, list[float]]:
    rates = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for fn in models.values():
                fn(pixels)
        for _ in range(repeats):
            for name, fn in models.items():  # interleaved
                synchronize(device)
                start = time.perf_counter()
                fn(pixels)
                synchronize(device)
                rates[name].append(pixels.shape[0] / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--sizes", nargs="+", default=["tiny:32", "small:32", "base:32"], help="SIZE:BATCH")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device == 'cuda' else platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads), dtype {args.dtype}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, timm {timm.__version__}, compile {args.compile}")
    print("| model | batch | dseqjepa img/s | timm img/s | transformers IJepa img/s | vs timm | vs transformers |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.sizes:
        size, batch = spec.split(":")
        models, side = build_models(size, args.device, dtype, args.compile)
        pixels = torch.randn(int(batch), 3, side, side, device=args.device, dtype=dtype)
        rates = measure(models, pixels, args.repeats, args.warmup, args.device)
        median = {name: statistics.median(values) for name, values in rates.items()}
        print(f"| ViT-{size} | {batch} | {median['dseqjepa']:.1f} | {median['timm']:.1f} | "
              f"{median['transformers-ijepa']:.1f} | {median['dseqjepa'] / median['timm']:.3f}x | "
              f"{median['dseqjepa'] / median['transformers-ijepa']:.3f}x |", flush=True)
        del models
        if args.device == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
