"""`dseqjepa push DIR --repo-id ORG/NAME`: publish a model folder to the Hugging Face Hub."""

from __future__ import annotations

import argparse

from .console import log, say

DESCRIPTION = ("Stage DIR (model, image processor, remote code, saliency-ranking pipeline, README.md rendered from "
               "model_card.md), check that it loads and that the card validates, then upload it in one commit. "
               "HF_ENDPOINT and HF_TOKEN are honoured.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="DIR", help="a model folder, or a training run or checkpoint (its target encoder)")
    parser.add_argument("--repo-id", required=True, help="ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to commit to (created if missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--commit-message")
    parser.add_argument("--dry-run", action="store_true", help="stage into --stage-dir and upload nothing")
    parser.add_argument("--stage-dir", help="folder (absent or empty) to stage into; kept afterwards")
    parser.add_argument("--license", help="license id for the card (default: the one recorded by convert)")
    parser.add_argument("--dataset", action="append", dest="datasets", help="pretraining dataset id (repeatable)")
    parser.add_argument("--base-model", help="Hub id of the source weights (default: the one recorded by convert)")
    parser.add_argument("--eval-file", action="append", dest="eval_files",
                        help="evaluation JSON (`dseqjepa eval --out`) for the card; repeatable; "
                        "DIR/eval_results.json is always read when present")
    parser.add_argument("--space", nargs="?", const="", default=None, metavar="SPACE_DIR",
                        help="also stage a Hugging Face Space that runs the browser demo (`dseqjepa demo`) on the pushed "
                             "model: app.py, requirements.txt, README.md with the Space front matter, example photos; "
                             "into SPACE_DIR (absent or empty; default: ./NAME-space)")


def run(args: argparse.Namespace) -> int:
    from dseqjepa_hub.application.publish import push

    space_dir = None
    if args.space is not None:  # checked before anything is pushed
        from dseqjepa_hub.application.atomic import check_empty_folder

        space_dir = args.space or f"{args.repo_id.split('/')[-1]}-space"
        check_empty_folder(space_dir)
    push(
        args.model_dir, args.repo_id, private=args.private, revision=args.revision, create_pr=args.create_pr,
        commit_message=args.commit_message, dry_run=args.dry_run, stage_dir=args.stage_dir,
        license=args.license, datasets=args.datasets, base_model=args.base_model, eval_files=args.eval_files,
        log=log(args),
    )
    if space_dir is not None:
        from dseqjepa_hub.application.space import stage_space

        names = stage_space(args.repo_id, space_dir, license=args.license)
        say(args, f"staged the Space in {space_dir}: {', '.join(names)}")
        say(args, f"upload it with: hf upload {args.repo_id}-demo {space_dir} --repo-type space")
    return 0
