"""`dseqjepa train --config C --data D --output O`: pretrain DSeq-JEPA or the I-JEPA baseline.

Several processes: `torchrun --nproc_per_node=K -m dseqjepa_cli train ...`.
"""

from __future__ import annotations

import argparse

from .arguments import positive_int
from .console import say, show_progress

DESCRIPTION = ("Pretrain DSeq-JEPA (method dseq), the I-JEPA baseline (ijepa) or the release's mixed curriculum "
               "(mixed). Writes OUTPUT/config.yaml, OUTPUT/metrics.jsonl and OUTPUT/checkpoints/step_*/, each holding "
               "the target_encoder/, context_encoder/ and predictor/ model folders and the trainer state for --resume.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="a YAML file or a shipped config name (tiny-cpu, scenes-cpu, domain-adapt, vit_tiny, vit_small, vit_base, "
                             "vit_huge14, vit_giant)")
    parser.add_argument("--data", required=True,
                        help="an image folder (recursive), a text file listing images, a labelled split with a labels.tsv "
                             "(the images it lists: the data kit's scenes/train), or a Hugging Face data set (a "
                             "save_to_disk folder, a Parquet or Arrow file, a repo id in the HF caches; its column "
                             "image_column, --set image_column=NAME)")
    parser.add_argument("--streaming", action="store_true",
                        help="read the --data data set as a stream (nothing converted into the datasets cache, nothing "
                             "held beyond a row group and the shuffle buffer of shuffle_buffer rows, reseeded each "
                             "epoch); --resume resumes it exactly (the config key streaming)")
    parser.add_argument("--output", required=True, help="the run's folder")
    parser.add_argument("--max-steps", type=positive_int, default=None,
                        help="stop after this step; schedules still follow the config's training length")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set lr=1e-3 --set model.hidden_size=64")
    parser.add_argument("--init-from", metavar="MODEL", default=None,
                        help="continue pretraining from this model (a model folder, training run or checkpoint, Hub repo "
                             "id, or 'default', the bundled model): both encoders start from it, the predictor from its "
                             "own when it has one; the config's architecture must be the model's (the config key "
                             "init_from; see --config domain-adapt)")
    parser.add_argument("--stop-on-collapse", action="store_true",
                        help="stop (exit 1) when the target embeddings collapse: effective rank or normalised std below "
                             "collapse_rank / collapse_std for collapse_patience logs in a row (the config key "
                             "stop_on_collapse; without it, a warning line)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint in OUTPUT (the config must be the checkpoint's "
                             "but for the monitoring keys: log_every, eval_*, collapse_*, stop_on_collapse)")


def run(args: argparse.Namespace) -> int:
    import logging

    from dseqjepa_train import load_config, train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = args.overrides + ([f"init_from={args.init_from}"] if args.init_from is not None else [])
    overrides += ["stop_on_collapse=true"] if args.stop_on_collapse else []
    overrides += ["streaming=true"] if args.streaming else []
    config = load_config(args.config, overrides)
    result = train(config, args.data, args.output, max_steps=args.max_steps, resume=args.resume,
                   progress=show_progress(args))
    if result.loss is None:
        say(args, f"the run is already complete at step {result.step} ({result.checkpoint}); nothing was changed")
    elif result.checkpoint is not None:  # rank 0
        say(args, f"trained to step {result.step}, loss {result.loss:.4f}; checkpoint: {result.checkpoint}")
    return 0
