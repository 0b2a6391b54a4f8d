"""`dseqjepa train`: pretrain DSeq-JEPA (or the I-JEPA baseline) on an image folder.

Run under `torchrun --nproc_per_node=K -m dseqjepa_hub.cli train ...` for several processes.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .config import ConfigError, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="pretrain DSeq-JEPA or the I-JEPA baseline",
        description="Pretrain DSeq-JEPA (method dseq), the I-JEPA baseline (ijepa) or the release's mixed "
        "curriculum (mixed). Writes OUTPUT/config.yaml, OUTPUT/metrics.jsonl and OUTPUT/checkpoints/step_*/.",
    )
    parser.add_argument("--config", required=True,
                        help="a YAML file or a shipped config name (tiny-cpu, vit_tiny, vit_small, vit_base, "
                             "vit_huge14, vit_giant)")
    parser.add_argument("--data", required=True, help="an image folder (recursive) or a text file listing images")
    parser.add_argument("--output", required=True, help="the run's folder")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this step; schedules still follow the config's training length")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set lr=1e-3 --set model.hidden_size=64")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in OUTPUT")
    parser.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from .trainer import TrainingDiverged, train  # torch and the model load only when training

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.max_steps is not None and args.max_steps <= 0:
        print(f"error: --max-steps must be positive, found {args.max_steps}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, args.overrides)
        result = train(config, args.data, args.output, max_steps=args.max_steps, resume=args.resume)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if result.checkpoint is not None:  # rank 0
        print(f"trained to step {result.step}, loss {result.loss:.4f}; checkpoint: {result.checkpoint}")
    return 0
