"""Record step-level parity fixtures from the authors' DSeq-JEPA release and from I-JEPA's code.

The tests in tests/test_release_parity.py check `dseqjepa train` against these recordings; they
need neither checkout nor network. This script is the only place that runs the authors' code.
It imports the two repositories from checkouts given on the command line (their code is never
copied into this repository), runs their own training loops (`main()` of
`src/frameworks/dseqjepa/pretrain.py` and of I-JEPA's `src/train.py`) at a tiny size on the CPU
in fp32 for a batch of 4 images, and records what their code computed.

How tests/fixtures/parity/ was made (2 CPU cores, about 30 s; the output is byte-identical on reruns):

    # the search tool's `fetch` verb gave bare mirrors of the two repositories; cloned into a
    # scratch folder outside this repository:
    git clone /work/.mirror/SkyShunsuke+DSeq-JEPA/repo /work/scratch/dseq
    git clone /work/.mirror/facebookresearch+ijepa/repo /work/scratch/ijepa
    # SkyShunsuke/DSeq-JEPA        6fdb97124cbbf612b80ee9f4cc735fee93c6a8b9
    # facebookresearch/ijepa       52c1ae95d05f743e000e8f10a1f3a79b10cff048
    .venv/bin/python scripts/make_parity_fixtures.py \
        --release-dir /work/scratch/dseq --ijepa-dir /work/scratch/ijepa --out tests/fixtures/parity

Their imports need nothing beyond this project's dev environment (torch, torchvision, numpy,
opencv, pyyaml, tqdm, PIL) except `wandb`, which the release imports unconditionally and is
replaced by an empty module (logging to wandb is off).

Runs (each in its own process: both repositories are the top-level package `src`):
- release-dseq: the release's loop with lambda fixed at 1 (every step a DSeq step), one step,
  from their initialisation with the LayerNorms and biases perturbed (see `_perturb`: at their
  init every norm is an identity and every bias zero, which would hide mistakes there).
  Records the saliency and region masks their SelfGuidedAttention computes, the context and
  target masks of generate_dseq_masks, their loss, the predictor outputs at the target
  positions, every gradient before their optimizer step, and, after the step (their AdamW,
  LR / weight-decay / EMA schedules and EMA update), the context encoder, predictor and target
  encoder.
- release-ijepa: the same loop with lambda fixed at 0 (the release's own I-JEPA branch of its
  mixed curriculum), one step: the collator's multi-block masks, the masks its encoder and
  predictor actually receive, the loss and the predictions.
- release-mixed: the same loop with the release config's lambda 0 -> 1, run to the end
  (20 steps): the LR, weight decay, EMA momentum and lambda their schedulers give at each
  iteration, and which branch each iteration took.
- ijepa: I-JEPA's loop (facebookresearch/ijepa), one step, from the same initial weights
  (the release run's, `cls_token` dropped) and the same images: its multi-block masks, loss,
  predictions, every gradient, and the weights after its AdamW, schedules and EMA.

Patches applied at run time (also listed in parity.json under "patches"):
- release: `torch.device("cuda:N")` -> CPU, `torch.cuda.synchronize()` -> no-op and
  `torch.cuda.Event` -> a no-op timer (CUDA-only calls of the training loop, for timing);
  `init_distributed_mode` (NCCL, `torch.cuda.set_device`) -> a 1-process gloo group, so that
  their `DistributedDataParallel(...)` and `.module` accesses run as written; `make_dataset`
  -> one in-memory batch per iteration through their own mask collator. Their
  `torch.amp.autocast("cuda", enabled=False)` runs unpatched (fp32: use_bfloat16 false).
  Two flaws of its model building are worked around (docs/PARITY.md): `init_model` reads
  `model_name`, not the configs' `name` (so every config builds a ViT-B): the config gets a
  `model_name` key; and it hands the encoder width to the predictor as `emb_dim`, which the
  predictor does not read (it stays 768 wide): `vit_predictor` gets it as `embed_dim`.
- I-JEPA: a 1-process gloo group is created before `main` (its `init_distributed` only joins
  SLURM jobs); `make_imagenet1k` -> the same in-memory batch through its own mask collator;
  `init_model` loads the shared initial weights into the modules it built.
- both: a model size `vit_parity` (their ViT class at width 16, depth 3, 2 heads) is added to
  their model module, and recording wrappers (forward hooks, an optimizer step pre-hook, thin
  wrappers around their loss and mask functions that return what those return) observe the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types
from functools import partial
from pathlib import Path

RELEASE_REPO = "SkyShunsuke/DSeq-JEPA"
IJEPA_REPO = "facebookresearch/ijepa"

# Sizes: 32 px images, 4 px patches (an 8 x 8 grid: the multi-block collators cannot place
# their blocks on 4 x 4), encoder width 16, depth 3, 2 heads, predictor width 8, depth 2 (heads
# = the encoder's, as both releases build it), saliency from block 1 (the second to last, as
# block 10 of 12 in the release configs), 4 images.
SETTINGS = {
    "image_size": 32,
    "patch_size": 4,
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "mlp_ratio": 4,
    "predictor_hidden_size": 8,
    "predictor_num_hidden_layers": 2,
    "saliency_layer": 1,
    "min_region_fraction": 0.15,
    "num_regions": 5,
    "batch_size": 4,
    # Multi-block masks (docs/METHOD.md section 4, both releases' configs).
    "num_enc_masks": 1,
    "num_pred_masks": 4,
    "enc_mask_scale": [0.85, 1.0],
    "pred_mask_scale": [0.15, 0.2],
    "aspect_ratio": [0.75, 1.5],
    "min_keep": 4,  # on an 8 x 8 grid; both collators also require target blocks to exceed it (10 would hang on 3 x 3 blocks)
    # Optimisation: 4 epochs of 5 iterations, 1 warm-up epoch (short, so that an off-by-one
    # in a schedule shows in one step).
    "epochs": 4,
    "iterations_per_epoch": 5,
    "warmup_epochs": 1,
    "start_lr": 2e-4,
    "lr": 1e-3,
    "final_lr": 1e-4,
    "weight_decay": 0.04,
    "final_weight_decay": 0.4,
    "ema": [0.996, 1.0],
    "seed": 0,
}


# ----------------------------------------------------------------------------- shared helpers


class _Stop(Exception):
    """Raised by the in-memory loader to end a run after the recorded step."""


class _NoOpEvent:
    """torch.cuda.Event stand-in: the release times its steps with CUDA events."""

    def __init__(self, *args, **kwargs):
        pass

    def record(self, *args, **kwargs):
        pass

    def elapsed_time(self, other):
        return 0.0


class _Proxy(types.ModuleType):
    """A module that forwards every attribute to `real` except the ones given."""

    def __init__(self, real, **overrides):
        super().__init__(getattr(real, "__name__", "proxy"))
        self._real = real
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        return getattr(self._real, name)


# Blob layouts on the 8 x 8 patch grid, (row, column, height, width) in patches: 4, 3 and 2
# separated blocks of >= 10 patches (the release's min_region_fraction 0.15 keeps >= 9.6).
BLOB_LAYOUTS = (
    ((0, 0, 2, 5), (0, 6, 5, 2), (3, 0, 5, 2), (3, 3, 5, 2)),
    ((0, 0, 3, 4), (0, 5, 4, 3), (5, 1, 3, 5)),
    ((1, 1, 3, 3), (4, 4, 4, 4)),
    ((0, 0, 2, 5), (0, 6, 5, 2), (3, 0, 5, 2), (3, 3, 5, 2)),
)
IMAGE_SEED = 2  # of the first 60 seeds, one whose images give 0, 1, 1 and 4 regions, and where
# 4-connectivity would give other regions than the release's 8 (so the fixture pins it)


def _images(torch):
    """4 images: blobs of one random colour on another, plus noise, times 12 (so that the
    content, not the sin-cos positions, shapes the untrained encoder's saliency); float16
    values (exact in float32, stored losslessly as float16)."""
    generator = torch.Generator().manual_seed(IMAGE_SEED)
    size, patch = SETTINGS["image_size"], SETTINGS["patch_size"]
    images = []
    for blobs in BLOB_LAYOUTS:
        inside = torch.randn(3, 1, 1, generator=generator)
        outside = torch.randn(3, 1, 1, generator=generator)
        image = outside.expand(3, size, size).clone()
        for row, col, height, width in blobs:
            image[:, row * patch:(row + height) * patch, col * patch:(col + width) * patch] = inside
        images.append(12 * (image + 0.3 * torch.randn(3, size, size, generator=generator)))
    return torch.stack(images).half().float()


class _Loader:
    """`iterations_per_epoch` iterations per epoch, each the same images through the collator;
    `stop_at` ends the run (raising _Stop) before that global iteration is handed out."""

    def __init__(self, images, collator, stop_at=None, on_iteration=None):
        self.images = images
        self.collator = collator
        self.stop_at = stop_at
        self.on_iteration = on_iteration
        self.count = 0
        self.collated = []
        self.dataset = images  # len() is logged by the release

    def __len__(self):
        return SETTINGS["iterations_per_epoch"]

    def __iter__(self):
        import torch

        for _ in range(len(self)):
            if self.on_iteration is not None:
                self.on_iteration(self.count)
            if self.stop_at is not None and self.count >= self.stop_at:
                raise _Stop
            self.count += 1
            batch = [(image, torch.tensor(0)) for image in self.images]
            out = self.collator(batch)
            self.collated.append(out)
            yield out


class _Sampler:
    def set_epoch(self, epoch):
        pass


def _gloo_group(work: Path):
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"file://{work / 'process_group'}", rank=0, world_size=1)


def _seed_everything(seed):
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _perturb(torch, nn, *modules):
    """Their init leaves every LayerNorm an identity (weight 1, bias 0) and every bias 0, so a
    step from it cannot tell, e.g., whether the targets get their extra parameter-free
    layer_norm. The shared initial weights are their init with LayerNorm weights 1 + 0.1 N(0, 1)
    and every bias 0.05 N(0, 1) (seeded)."""
    generator = torch.Generator().manual_seed(SETTINGS["seed"] + 1)
    with torch.no_grad():
        for module in modules:
            for name, parameter in module.named_parameters():
                if not parameter.requires_grad:
                    continue
                owner = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
                if isinstance(owner, nn.LayerNorm) and name.endswith("weight"):
                    parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
                elif name.endswith("bias"):
                    parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))


def _state(module, prefix):
    return {f"{prefix}.{name}": tensor.detach().clone().float() for name, tensor in module.state_dict().items()}


def _grads(named, prefix, missing):
    out = {}
    for name, parameter in named:
        if not parameter.requires_grad:
            continue
        if parameter.grad is None:
            missing.append(f"{prefix}.{name}")
        else:
            out[f"grad.{prefix}.{name}"] = parameter.grad.detach().clone()
    return out


# ----------------------------------------------------------------------------- the release


def _release_worker(checkout: Path, work: Path, run: str, init_path: Path | None, out_path: Path):
    sys.path.insert(0, str(checkout))
    os.chdir(work)
    (work / "logs").mkdir(exist_ok=True)  # setup_logging writes logs/app_rank0.log under the working folder
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))  # imported unconditionally, unused here
    import cv2
    import numpy as np
    import src.frameworks.dseqjepa.attention as attention
    import src.frameworks.dseqjepa.pretrain as pretrain
    import src.models.masked_vision_transformer as masked_vit
    import torch
    import yaml
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    s = SETTINGS
    masked_vit.vit_parity = partial(
        masked_vit.MaskedVisionTransformer, embed_dim=s["hidden_size"], depth=s["num_hidden_layers"],
        num_heads=s["num_attention_heads"], mlp_ratio=s["mlp_ratio"], qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    # Their init_model passes the encoder width as `emb_dim=`, which MaskedVisionTransformerPredictor
    # does not read (its parameter is `embed_dim`, default 768): the predictor's input and output
    # are 768 wide whatever the encoder. That only fits a ViT-B encoder, so at width 16 the
    # predictor gets the width under the name it reads.
    vit_predictor = masked_vit.vit_predictor

    def vit_predictor_with_width(emb_dim=None, **kwargs):
        return vit_predictor(embed_dim=emb_dim, **kwargs)

    masked_vit.vit_predictor = vit_predictor_with_width

    params = yaml.safe_load((checkout / "configs/dseqjepa/vitt16_in1k.yaml").read_text())
    params["data"]["augmentation"]["crop_size"] = s["image_size"]
    params["data"]["batch_size_per_replica"] = s["batch_size"]
    params["data"]["num_workers"] = 0
    params["mask"].update(
        patch_size=s["patch_size"], num_enc_masks=s["num_enc_masks"], num_pred_masks=s["num_pred_masks"],
        enc_mask_scale=s["enc_mask_scale"], pred_mask_scale=s["pred_mask_scale"], aspect_ratio=s["aspect_ratio"],
        min_keep=s["min_keep"],
    )
    params["opt"].update(
        epochs=s["epochs"], lr_warmup_epochs=s["warmup_epochs"], lr_start=s["start_lr"], lr_warmup=s["lr"],
        lr_end=s["final_lr"], wd_start=s["weight_decay"], wd_end=s["final_weight_decay"], use_bfloat16=False,
        clip_grad=0.0,
    )
    params["framework"]["model"].update(
        # `name` is what their config sets and main() logs; init_model reads `model_name`
        # (default 'vit_base'), so without this key every config trains a ViT-B.
        name="vit_parity", model_name="vit_parity", emb_dim=s["hidden_size"], pred_depth=s["predictor_num_hidden_layers"],
        pred_emb_dim=s["predictor_hidden_size"], ema_start=s["ema"][0], ema_end=s["ema"][1],
    )
    params["framework"]["attention"].update(
        depth=s["saliency_layer"], alpha=s["min_region_fraction"], region_num=s["num_regions"]
    )
    params["framework"]["lambda"] = {
        "release-dseq": {"lambda_start": 1.0, "lambda_end": 1.0},
        "release-ijepa": {"lambda_start": 0.0, "lambda_end": 0.0},
        "release-mixed": dict(params["framework"]["lambda"]),  # the config's 0 -> 1
    }[run]
    params["logging"].update(log_dir=str(work / "logs"), use_tensorboard=False, use_csv=False, log_step_freq=1)
    params["logging"]["wandb"]["use_wandb"] = False
    params["logging"]["eval"]["eval_epoch_freq"] = 10**9
    params["logging"]["ckpt"].update(save_latest=False, ckpt_epoch_freq=10**9)
    params["resume"]["resume_path"] = None

    record: dict = {"tensors": {}, "scalars": {}, "schedule": [], "missing_grads": [], "branch": {}}
    tensors, scalars = record["tensors"], record["scalars"]
    modules: list[nn.Module] = []  # encoder, predictor, target_encoder in their wrapping order
    iteration = {"index": 0}

    # -- CUDA-only calls of the loop -> CPU
    def device(spec, *args):
        if isinstance(spec, str) and spec.startswith("cuda"):
            return torch.device("cpu")
        return torch.device(spec, *args)

    pretrain.torch = _Proxy(torch, device=device, cuda=_Proxy(torch.cuda, synchronize=lambda *a, **k: None))
    pretrain.CUDAEvent = _NoOpEvent

    def init_distributed_mode(args):  # NCCL + torch.cuda.set_device -> one gloo process
        _gloo_group(work)
        args.distributed, args.gpu, args.rank, args.world_size = True, 0, 0, 1

    pretrain.init_distributed_mode = init_distributed_mode

    # -- data: the same images every iteration, through their collator
    images = _images(torch)
    loaders = []

    def make_dataset(*, collator=None, **kwargs):
        stop_at = None if run == "release-mixed" else 1
        loader = _Loader(images, collator, stop_at=stop_at, on_iteration=on_iteration) if not loaders else None
        loaders.append(loader)
        return None, loader, _Sampler()

    pretrain.make_dataset = make_dataset

    # -- recorders
    init_model = pretrain.init_model

    def recording_init_model(*args, **kwargs):
        encoder, predictor = init_model(*args, **kwargs)
        if init_path is not None:  # the same initial weights in every run
            from safetensors.torch import load_file

            init = load_file(str(init_path))
            for module, prefix in ((encoder, "encoder."), (predictor, "predictor.")):
                module.load_state_dict({k[len(prefix):]: v for k, v in init.items() if k.startswith(prefix)}, strict=True)
        else:
            _perturb(torch, nn, encoder, predictor)
        return encoder, predictor

    pretrain.init_model = recording_init_model

    def recording_ddp(module, **kwargs):
        modules.append(module)
        if len(modules) == 1:
            tensors.update(_state(module, "init.encoder"))
        elif len(modules) == 2:
            tensors.update(_state(module, "init.predictor"))
        return DistributedDataParallel(module, **kwargs)

    pretrain.DistributedDataParallel = recording_ddp

    get_optimizer = pretrain.get_pretrain_optimizer

    def recording_get_optimizer(encoder, predictor, **kwargs):
        optimizer = get_optimizer(encoder=encoder, predictor=predictor, **kwargs)

        def pre_step(opt, args, kw):
            groups = [{"lr": g["lr"], "weight_decay": g["weight_decay"], "size": len(g["params"])} for g in opt.param_groups]
            record["schedule"].append({"iteration": iteration["index"], "groups": groups})
            if iteration["index"] == 0:
                tensors.update(_grads(encoder.named_parameters(), "encoder", record["missing_grads"]))
                tensors.update(_grads(predictor.named_parameters(), "predictor", record["missing_grads"]))
                names = {id(p): f"encoder.{n}" for n, p in encoder.named_parameters()}
                names.update({id(p): f"predictor.{n}" for n, p in predictor.named_parameters()})
                record["param_groups"] = [
                    {"weight_decay_scheduled": not g.get("WD_exclude", False),
                     "params": [names[id(p)] for p in g["params"]]} for g in opt.param_groups
                ]

        optimizer.register_step_pre_hook(pre_step)
        return optimizer

    pretrain.get_pretrain_optimizer = recording_get_optimizer

    def recording_scheduler(factory, key):
        def build(**kwargs):
            scheduler = factory(**kwargs)
            current = scheduler.current_ema if key == "ema" else scheduler.current_lambda

            def read():
                value = current()
                record.setdefault(key, {}).setdefault(iteration["index"], value)
                return value

            if key == "ema":
                scheduler.current_ema = read
            else:
                scheduler.current_lambda = read
            return scheduler

        return build

    pretrain.get_ema_scheduler = recording_scheduler(pretrain.get_ema_scheduler, "ema")
    pretrain.get_lambda_scheduler = recording_scheduler(pretrain.get_lambda_scheduler, "lambda")

    # saliency (the matmul of SelfGuidedAttention), the 8-bit maps and Otsu thresholds (cv2)
    matmuls, thresholds, levels = [], [], []

    def matmul(a, b):
        out = torch.matmul(a, b)
        matmuls.append(out.detach().clone())
        return out

    def threshold(image, *args):
        levels.append(np.array(image, copy=True))
        value, mask = cv2.threshold(image, *args)
        thresholds.append(float(value))
        return value, mask

    attention.torch = _Proxy(torch, matmul=matmul)
    attention.cv2 = _Proxy(cv2, threshold=threshold)

    class RecordingAttention(pretrain.SelfGuidedAttention):
        def forward(self, z, query_z):
            regions = super().forward(z, query_z)
            if iteration["index"] == 0:
                dim = z.shape[-1]
                tensors["saliency"] = (matmuls[-1].squeeze(1) / (dim ** 0.5)).reshape(-1, *[int(z.shape[1] ** 0.5)] * 2)
                tensors["saliency_uint8"] = torch.from_numpy(np.stack(levels[-z.shape[0]:]))
                scalars["otsu_thresholds"] = thresholds[-z.shape[0]:]
                tensors["regions"] = regions.bool()
            return regions

    pretrain.SelfGuidedAttention = RecordingAttention

    generate_dseq_masks = pretrain.generate_dseq_masks

    def recording_generate_dseq_masks(regions):
        context_masks, target_masks = generate_dseq_masks(regions)
        record["branch"][iteration["index"]] = "dseq"
        if iteration["index"] == 0:
            tensors["context_masks"] = context_masks.bool()  # their convention: True = masked (not context)
            tensors["target_masks"] = target_masks.bool()
        return context_masks, target_masks

    pretrain.generate_dseq_masks = recording_generate_dseq_masks

    masked_loss = pretrain.masked_smooth_l1_loss

    def recording_masked_loss(pred, target, mask):
        loss = masked_loss(pred, target, mask)
        record["branch"].setdefault(iteration["index"], "ijepa")
        if iteration["index"] == 0:
            keep = mask.bool()
            tensors["predictions"] = pred.detach()[keep].clone()  # (target tokens, D), row-major
            tensors["loss_target_masks"] = keep.clone()
            scalars["loss"] = float(loss)
            tensors["loss"] = loss.detach().clone().reshape(1)
        return loss

    pretrain.masked_smooth_l1_loss = recording_masked_loss

    def encoder_pre_hook(module, args, kwargs):
        if iteration["index"] == 0 and "masks" in kwargs:
            tensors["encoder_masks"] = kwargs["masks"].bool().clone()  # True = masked

    def predictor_pre_hook(module, args, kwargs):
        if iteration["index"] == 0:
            tensors["predictor_context_masks"] = args[1].bool().clone()  # True = masked
            tensors["predictor_target_masks"] = args[2].bool().clone()

    def on_iteration(index):
        if index == 0:  # the modules exist now (wrapped before the loop)
            modules[0].register_forward_pre_hook(encoder_pre_hook, with_kwargs=True)
            modules[1].register_forward_pre_hook(predictor_pre_hook, with_kwargs=True)
        iteration["index"] = index
        if index == 1:  # step 0 is over: optimizer step, EMA and the schedulers' ticks done
            tensors.update(_state(modules[0], "after.encoder"))
            tensors.update(_state(modules[1], "after.predictor"))
            tensors.update(_state(modules[2], "after.target_encoder"))

    _seed_everything(s["seed"])
    args = argparse.Namespace(gpu=0, distributed=False, dist_on_itp=False, world_size=1, local_rank=-1,
                              dist_url="env://", device="cuda", task="pretrain")
    try:
        pretrain.main(params, args)
        finished = True
    except _Stop:
        finished = False
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()

    loader = loaders[0]
    batch, masks_enc, masks_pred = loader.collated[0]
    tensors["images"] = batch[0].half()
    tensors["collator_masks_enc"] = torch.stack(masks_enc)  # (Nenc, B, K) patch indices
    tensors["collator_masks_pred"] = torch.stack(masks_pred)  # (Npred, B, K)
    scalars["finished"] = finished
    scalars["iterations"] = loader.count
    ema = record.get("ema", {})
    lam = record.get("lambda", {})
    steps = []
    for entry in record["schedule"]:
        i = entry["iteration"]
        decayed = [g for g in entry["groups"] if g["weight_decay"] > 0 or len(entry["groups"]) == 1]
        steps.append({"iteration": i, "lr": entry["groups"][0]["lr"], "weight_decay": decayed[0]["weight_decay"],
                      "no_decay_group_weight_decay": entry["groups"][1]["weight_decay"],
                      "ema": ema.get(i), "lambda": lam.get(i), "branch": record["branch"].get(i)})
    record["schedule"] = steps
    torch.save(record, out_path)


# ----------------------------------------------------------------------------- I-JEPA


def _ijepa_worker(checkout: Path, work: Path, init_path: Path, out_path: Path):
    sys.path.insert(0, str(checkout))
    os.chdir(work)
    import src.models.vision_transformer as vit
    import src.train as train
    import torch
    import yaml
    from safetensors.torch import load_file
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    s = SETTINGS
    vit.vit_parity = partial(
        vit.VisionTransformer, embed_dim=s["hidden_size"], depth=s["num_hidden_layers"],
        num_heads=s["num_attention_heads"], mlp_ratio=s["mlp_ratio"], qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    args = yaml.safe_load((checkout / "configs/in1k_vith14_ep300.yaml").read_text())
    args["meta"].update(use_bfloat16=False, model_name="vit_parity", load_checkpoint=False, copy_data=False,
                        pred_depth=s["predictor_num_hidden_layers"], pred_emb_dim=s["predictor_hidden_size"])
    args["data"].update(batch_size=s["batch_size"], num_workers=0, pin_mem=False, crop_size=s["image_size"],
                        root_path=str(work), image_folder="none")
    args["mask"].update(patch_size=s["patch_size"], num_enc_masks=s["num_enc_masks"],
                        num_pred_masks=s["num_pred_masks"], enc_mask_scale=s["enc_mask_scale"],
                        pred_mask_scale=s["pred_mask_scale"], aspect_ratio=s["aspect_ratio"],
                        min_keep=s["min_keep"], allow_overlap=False)
    args["optimization"].update(ema=s["ema"], ipe_scale=1.0, weight_decay=s["weight_decay"],
                                final_weight_decay=s["final_weight_decay"], epochs=s["epochs"],
                                warmup=s["warmup_epochs"], start_lr=s["start_lr"], lr=s["lr"], final_lr=s["final_lr"])
    args["logging"].update(folder=str(work), write_tag="parity")

    record: dict = {"tensors": {}, "scalars": {}, "missing_grads": []}
    tensors, scalars = record["tensors"], record["scalars"]
    modules: list[nn.Module] = []
    iteration = {"index": 0}
    init = load_file(str(init_path))

    def init_model(**kwargs):
        encoder, predictor = real_init_model(**kwargs)
        encoder.load_state_dict({k[8:]: v for k, v in init.items() if k.startswith("encoder.") and k != "encoder.cls_token"},
                                strict=True)
        predictor.load_state_dict({k[10:]: v for k, v in init.items() if k.startswith("predictor.")}, strict=True)
        return encoder, predictor

    real_init_model = train.init_model
    train.init_model = init_model

    def recording_ddp(module, **kwargs):
        modules.append(module)
        if len(modules) == 2:
            module.register_forward_hook(predictor_hook)
        return DistributedDataParallel(module, **kwargs)

    train.DistributedDataParallel = recording_ddp

    def predictor_hook(module, inputs, output):
        if iteration["index"] == 0:
            tensors["predictions"] = output.detach().clone()  # (Npred * B, K, D): target block t of image b at t * B + b

    real_all_reduce = train.AllReduce

    class RecordingAllReduce:
        @staticmethod
        def apply(loss):
            if iteration["index"] == 0:
                scalars["loss"] = float(loss)
                tensors["loss"] = loss.detach().clone().reshape(1)
            return real_all_reduce.apply(loss)

    train.AllReduce = RecordingAllReduce

    real_init_opt = train.init_opt

    def init_opt(encoder, predictor, **kwargs):
        optimizer, scaler, scheduler, wd_scheduler = real_init_opt(encoder=encoder, predictor=predictor, **kwargs)

        def pre_step(opt, a, kw):
            if iteration["index"] == 0:
                tensors.update(_grads(encoder.named_parameters(), "encoder", record["missing_grads"]))
                tensors.update(_grads(predictor.named_parameters(), "predictor", record["missing_grads"]))
                scalars["lr"] = opt.param_groups[0]["lr"]
                scalars["weight_decay"] = opt.param_groups[0]["weight_decay"]
                names = {id(p): f"encoder.{n}" for n, p in encoder.named_parameters()}
                names.update({id(p): f"predictor.{n}" for n, p in predictor.named_parameters()})
                record["param_groups"] = [
                    {"weight_decay_scheduled": not g.get("WD_exclude", False),
                     "params": [names[id(p)] for p in g["params"]]} for g in opt.param_groups
                ]

        optimizer.register_step_pre_hook(pre_step)
        return optimizer, scaler, scheduler, wd_scheduler

    train.init_opt = init_opt

    images = _images(torch)
    loaders = []

    def on_iteration(index):
        iteration["index"] = index
        if index == 1:
            tensors.update(_state(modules[0], "after.encoder"))
            tensors.update(_state(modules[1], "after.predictor"))
            tensors.update(_state(modules[2], "after.target_encoder"))

    def make_imagenet1k(*, collator=None, **kwargs):
        loader = _Loader(images, collator, stop_at=1, on_iteration=on_iteration)
        loaders.append(loader)
        return None, loader, _Sampler()

    train.make_imagenet1k = make_imagenet1k

    _gloo_group(work)
    _seed_everything(s["seed"])
    try:
        train.main(args)
    except _Stop:
        pass
    import torch.distributed as dist

    dist.destroy_process_group()
    batch, masks_enc, masks_pred = loaders[0].collated[0]
    tensors["collator_masks_enc"] = torch.stack(masks_enc)
    tensors["collator_masks_pred"] = torch.stack(masks_pred)
    assert torch.equal(batch[0], images)
    torch.save(record, out_path)


# ----------------------------------------------------------------------------- the fixtures


def _commit(checkout: Path) -> str:
    """The checked-out commit (the fixtures must name it: a checkout without git history is refused)."""
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        raise SystemExit(f"{checkout}: cannot read its git commit ({error}); use a git clone") from None


def _run_worker(kind: str, checkout: Path, work: Path, out: Path, init: Path | None) -> dict:
    import torch

    run_dir = work / kind
    run_dir.mkdir()
    command = [sys.executable, __file__, "--worker", kind, "--checkout", str(checkout), "--work", str(run_dir),
               "--record", str(out)]
    if init is not None:
        command += ["--init", str(init)]
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""})
    return torch.load(out, weights_only=True)  # the worker records tensors and plain data only


def _write(path: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    save_file({name: tensor.contiguous() for name, tensor in sorted(tensors.items())}, str(path))


def build(release_dir: Path, ijepa_dir: Path, out: Path) -> None:
    import torch

    commits = {RELEASE_REPO: _commit(release_dir), IJEPA_REPO: _commit(ijepa_dir)}
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dseq-parity-") as tmp:
        work = Path(tmp)
        dseq = _run_worker("release-dseq", release_dir, work, work / "release-dseq.pt", None)
        init_file = work / "init.safetensors"
        full_init = {k[len("init."):]: v for k, v in dseq["tensors"].items() if k.startswith("init.")}
        _write(init_file, full_init)
        ijepa_branch = _run_worker("release-ijepa", release_dir, work, work / "release-ijepa.pt", init_file)
        mixed = _run_worker("release-mixed", release_dir, work, work / "release-mixed.pt", init_file)
        ijepa = _run_worker("ijepa", ijepa_dir, work, work / "ijepa.pt", init_file)

    def keep(record, names):
        kept = {k: v for k, v in record["tensors"].items() if any(k == n or k.startswith(n + ".") for n in names)}
        # Fixed sin-cos tables: not trained (their EMA moves the target's copy by rounding only).
        for name in [k for k in kept if k.startswith("after.") and k.endswith("pos_embed")]:
            start = full_init[name.split(".", 1)[1].replace("target_encoder.", "encoder.")]
            torch.testing.assert_close(kept.pop(name), start, rtol=1e-6, atol=1e-7)
        return kept

    images = dseq["tensors"]["images"]
    assert torch.equal(images, ijepa_branch["tensors"]["images"])
    _write(out / "init.safetensors", {**{f"init.{k}": v for k, v in full_init.items()}, "images": images})
    step_names = ["grad", "after", "loss", "predictions"]
    _write(out / "release_dseq.safetensors",
           keep(dseq, step_names + ["saliency", "saliency_uint8", "regions", "context_masks", "target_masks"]))
    _write(out / "release_ijepa.safetensors",
           keep(ijepa_branch, ["loss", "predictions", "loss_target_masks", "collator_masks_enc",
                               "collator_masks_pred", "encoder_masks", "predictor_context_masks",
                               "predictor_target_masks"]))
    _write(out / "ijepa.safetensors", keep(ijepa, step_names + ["collator_masks_enc", "collator_masks_pred"]))

    def step_summary(record):
        return {
            "loss": record["scalars"].get("loss"),
            "missing_grads": record["missing_grads"],
            "param_groups": record.get("param_groups"),
        }

    metadata = {
        "about": "Step-level parity fixtures recorded from the authors' code by scripts/make_parity_fixtures.py",
        "repositories": {
            RELEASE_REPO: {"commit": commits[RELEASE_REPO],
                           "loop": "src/frameworks/dseqjepa/pretrain.py main()",
                           "config": "configs/dseqjepa/vitt16_in1k.yaml with the sizes and schedule below"},
            IJEPA_REPO: {"commit": commits[IJEPA_REPO], "loop": "src/train.py main()",
                         "config": "configs/in1k_vith14_ep300.yaml with the sizes and schedule below"},
        },
        "settings": SETTINGS,
        "precision": "fp32 on the CPU (use_bfloat16: false in both)",
        "torch": torch.__version__,
        "patches": {
            RELEASE_REPO: [
                "torch.device('cuda:N') -> torch.device('cpu') (pretrain.torch proxy)",
                "torch.cuda.synchronize() -> no-op (pretrain.torch proxy; timing only)",
                "torch.cuda.Event (CUDAEvent) -> no-op timer (timing only)",
                "init_distributed_mode (NCCL, torch.cuda.set_device) -> 1-process gloo group, args.distributed=True",
                "make_dataset -> in-memory loader: the fixture images every iteration, through their mask collator",
                "sys.modules['wandb'] -> empty module (imported unconditionally; wandb logging off)",
                "initial weights (release-dseq): their init_model, then LayerNorm weights 1 + 0.1 N(0, 1) and every "
                "bias 0.05 N(0, 1) (their init makes every norm an identity and every bias zero); saved as "
                "init.safetensors and loaded by every other run",
                "src.models.masked_vision_transformer.vit_parity added: their MaskedVisionTransformer at the sizes above, "
                "selected with the config key framework.model.model_name (init_model reads model_name, not the "
                "config's name, and defaults to vit_base)",
                "src.models.masked_vision_transformer.vit_predictor -> passes init_model's emb_dim as embed_dim "
                "(the predictor otherwise reads no width and is 768 wide, which only fits ViT-B)",
                "recorders (return what they wrap): DistributedDataParallel, init_model (loads init.safetensors in "
                "release-ijepa and release-mixed), get_pretrain_optimizer (step pre-hook), get_ema_scheduler, "
                "get_lambda_scheduler, SelfGuidedAttention (subclass), attention.torch.matmul, attention.cv2.threshold, "
                "generate_dseq_masks, masked_smooth_l1_loss, encoder/predictor forward pre-hooks",
            ],
            IJEPA_REPO: [
                "no CUDA-only call to patch: its loop picks the CPU when CUDA is absent and times with CUDA only "
                "when available; torch.cuda.amp.autocast(enabled=False) runs as written",
                "1-process gloo group created before main() (its init_distributed joins SLURM jobs only)",
                "make_imagenet1k -> in-memory loader: the same images, through its MaskCollator",
                "init_model -> builds its modules, then loads init.safetensors (cls_token dropped) strictly",
                "src.models.vision_transformer.vit_parity added: its VisionTransformer at the sizes above",
                "recorders: DistributedDataParallel, init_opt (step pre-hook), AllReduce (loss), predictor forward hook",
            ],
        },
        "runs": {
            "release-dseq": {**step_summary(dseq), "lambda": dseq.get("lambda"), "ema": dseq.get("ema"),
                             "otsu_thresholds": dseq["scalars"]["otsu_thresholds"], "schedule": dseq["schedule"]},
            "release-ijepa": {"loss": ijepa_branch["scalars"].get("loss"), "lambda": ijepa_branch.get("lambda")},
            "release-mixed": {"finished": mixed["scalars"]["finished"], "iterations": mixed["scalars"]["iterations"],
                              "schedule": mixed["schedule"]},
            "ijepa": {**step_summary(ijepa), "lr": ijepa["scalars"]["lr"],
                      "weight_decay": ijepa["scalars"]["weight_decay"]},
        },
        "files": {
            "init.safetensors": "init.encoder.* / init.predictor.*: the initial weights of every run (release "
                                "names; I-JEPA without cls_token); images: (B, 3, H, W) float16 (exact float32 values)",
            "release_dseq.safetensors": "saliency (B, h, w) and saliency_uint8 (their cv2 input), regions (B, 5, N), "
                                        "context_masks / target_masks (B*4, N; context: True = masked), predictions "
                                        "(target tokens in row-major order of target_masks, D), loss, grad.* (every "
                                        "parameter with a gradient, before the optimizer step), after.* (after the step "
                                        "and the EMA; the fixed pos_embed tables left out)",
            "release_ijepa.safetensors": "the release's I-JEPA branch: collator_masks_enc (1, B, K) and _pred (4, B, K) "
                                         "patch indices, encoder_masks (B, N; True = masked) and predictor_* masks as "
                                         "their encoder and predictor received them, loss_target_masks, predictions, loss",
            "ijepa.safetensors": "collator_masks_enc (1, B, K) and _pred (4, B, K), predictions (4*B, K, D: block t of "
                                 "image b at t*B+b), loss, grad.*, after.*",
        },
    }
    (out / "parity.json").write_text(json.dumps(metadata, indent=1, default=float) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({total / 1024:.0f} KiB)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release-dir", type=Path, help=f"checkout of {RELEASE_REPO}")
    parser.add_argument("--ijepa-dir", type=Path, help=f"checkout of {IJEPA_REPO}")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/parity"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--checkout", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--record", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--init", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import torch

        torch.set_num_threads(1)
        if args.worker == "ijepa":
            _ijepa_worker(args.checkout.resolve(), args.work, args.init, args.record)
        else:
            _release_worker(args.checkout.resolve(), args.work, args.worker, args.init, args.record)
        return
    if args.release_dir is None or args.ijepa_dir is None:
        parser.error("--release-dir and --ijepa-dir are required")
    for name, path in (("--release-dir", args.release_dir), ("--ijepa-dir", args.ijepa_dir)):
        if not (path / "src").is_dir():
            parser.error(f"{name} {path}: not a checkout (no src/ folder)")
    build(args.release_dir.resolve(), args.ijepa_dir.resolve(), args.out)


if __name__ == "__main__":
    main()
