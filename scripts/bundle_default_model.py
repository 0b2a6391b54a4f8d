"""Copy a converted, evaluated model into the package as the bundled default model.

    python scripts/bundle_default_model.py MODEL_DIR NOTES.md EVAL.json... [--repo-id ID]

The model card comes from `dseqjepa push --dry-run` (the model_card.md template with the
evaluation files); NOTES.md (what this particular run was and is not good for, its data and their
licences) travels in conversion.json as `card_notes`, so that pushing the bundled model again keeps it.
The bundled copy holds no remote code: inside the package the registered classes load it, so
`auto_map` and `custom_pipelines` are dropped from its configs. It replaces the previous one in one
step (`atomic_directory`): an interrupted run leaves the previous bundle in place.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import dseqjepa_hub
from dseqjepa_hub.application.atomic import atomic_directory

KEEP = ("config.json", "model.safetensors", "preprocessor_config.json", "conversion.json", "eval_results.json")
REMOTE_KEYS = ("auto_map", "custom_pipelines")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("notes", type=Path)
    parser.add_argument("eval_files", type=Path, nargs="+")
    parser.add_argument("--repo-id", default="dseqjepa-hub/dseqjepa-vit-w128-p8-96-scenes-cpu")
    parser.add_argument("--license", default="other")
    args = parser.parse_args()

    target = dseqjepa_hub.default_model_path()
    with tempfile.TemporaryDirectory() as scratch:
        source, stage = Path(scratch) / "model", Path(scratch) / "stage"
        shutil.copytree(args.model_dir, source)
        provenance_file = source / "conversion.json"
        provenance = json.loads(provenance_file.read_text()) if provenance_file.is_file() else {}
        provenance["card_notes"] = args.notes.read_text().strip()
        provenance_file.write_text(json.dumps(provenance, indent=1) + "\n")
        command = [sys.executable, "-m", "dseqjepa_cli", "push", str(source), "--repo-id", args.repo_id,
                   "--dry-run", "--stage-dir", str(stage), "--license", args.license]
        for eval_file in args.eval_files:
            command += ["--eval-file", str(eval_file)]
        subprocess.run(command, check=True)
        with atomic_directory(target, replace=True) as partial:
            for name in KEEP:
                shutil.copy2(stage / name, partial / name)
            for name in ("config.json", "preprocessor_config.json"):
                config = json.loads((partial / name).read_text())
                for key in REMOTE_KEYS:
                    config.pop(key, None)
                (partial / name).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            shutil.copy2(stage / "README.md", partial / "README.md")
    print(f"bundled {args.model_dir} as {target}")


if __name__ == "__main__":
    main()
