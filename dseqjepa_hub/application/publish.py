"""Publishing a model folder to the Hugging Face Hub: staging, the model card, the upload.

`stage` writes exactly what will be uploaded into a folder: the model re-saved with its remote
code and the saliency-ranking pipeline (config.json with `auto_map` and `custom_pipelines`,
model.safetensors, preprocessor_config.json, the `.py` files), README.md from the `model_card.md`
template, and the extras found beside the model (predictor.safetensors, conversion.json,
eval_results.json). What the card says about the weights' origin comes from conversion.json, as
`dseqjepa convert`'s reader for the source format wrote it: `license` (the default for --license),
`converted_from` (the source, named in a "Converted from" sentence) and `training_text` (the training
paragraph). The folder is loaded and run, and the card metadata checked, before any network call.
A training run or checkpoint publishes its target encoder (the one loader resolves it, and refuses
a damaged folder with the same `ModelLoadError` as every command). `push` then makes one commit with huggingface_hub (create_repo, create_branch for a new --revision,
create_commit).

Evaluation files: what `dseqjepa eval --out FILE.json` writes (one object: task, dataset, split,
metric, value, ...), a list of such objects, or {"results": [...]}. Per result, dataset, metric and
value are required; task (`linear`, `knn`, `regions` or a Hub task id), split, dataset_name and
protocol are optional. DIR/eval_results.json is read when present; the staged folder gets all
results, normalised, in eval_results.json.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path

import torch
from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

try:  # the HTTP library of huggingface_hub: httpx2 from version 2, httpx before
    from httpx2 import HTTPError as TransportError
except ImportError:
    from httpx import HTTPError as TransportError
from safetensors.torch import load_file

from .. import __version__
from ..errors import DSeqJEPAError
from ..pipeline_saliency_ranking import save_pretrained_with_pipeline
from ..regions import rank_regions
from .atomic import atomic_directory, check_empty_folder
from .loading import ModelLoadError, is_default_model, load_model, locate_model

CARD_TEMPLATE = files("dseqjepa_hub") / "model_card.md"
EVAL_FILE = "eval_results.json"
EXTRA_FILES = ("predictor.safetensors", "conversion.json")
TAGS = ["dseq-jepa", "jepa", "self-supervised-learning", "vision-transformer", "saliency"]
EVAL_TASKS = {  # `dseqjepa eval --task` -> (Hub task type, protocol)
    "linear": ("image-classification", "linear probe (frozen encoder)"),
    "knn": ("image-classification", "k-NN (frozen encoder)"),
    "regions": ("image-feature-extraction", "region quality (top-1 region on an object)"),
}


class HubError(DSeqJEPAError):
    """A folder, card or repo id that cannot be published, with the reason in words."""


def check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubError(f"--repo-id {repo_id!r}: {error}") from None
    if repo_id.count("/") != 1:
        raise HubError(f"--repo-id {repo_id!r}: expected ORG/NAME")


PIPELINE_TAGS = {  # the class a folder was saved as (config.json `architectures`) -> the card's pipeline tag
    "DSeqJEPAModel": "image-feature-extraction",
    "DSeqJEPAForImageClassification": "image-classification",
    "DSeqJEPABackbone": "image-feature-extraction",
}


def load_checked(model_dir: Path):
    """The folder (a model folder, or a training run or checkpoint: its target encoder) as the class it
    was saved as, through the one loader, and the folder it came from; its encoder must rank the
    regions of an image and the whole model run, to finite outputs: a folder that fails here is refused."""
    if not is_default_model(model_dir) and not model_dir.is_dir():
        raise ModelLoadError(f"{model_dir}: no such model folder")
    folder, _ = locate_model(model_dir)
    loaded = load_model(folder, as_saved=True)
    config = loaded.model.config
    pixel_values = torch.zeros(1, config.num_channels, config.image_size, config.image_size)
    try:
        with torch.no_grad():
            ranked = rank_regions(loaded.model.base_model, pixel_values)
            outputs = loaded.model(pixel_values=pixel_values)
    except Exception as error:  # noqa: BLE001 - any failure means: do not publish
        raise HubError(f"{folder}: the folder does not run as a DSeq-JEPA model: {error}") from error
    tensors = [*ranked.values(), *(t for v in outputs.values() for t in (v if isinstance(v, tuple) else (v,)))]
    if not all(torch.isfinite(t).all() for t in tensors if t.is_floating_point()):
        raise HubError(f"{folder}: the model gives non-finite outputs: its weights or config hold NaN or inf")
    return loaded, folder


def check_same_tensors(source: Path, staged: Path) -> None:
    """The staged weights are the source folder's, bit for bit, under the same names."""
    if not (source / "model.safetensors").is_file():
        return  # a sharded or .bin source: its tensors were checked through loading
    before, after = load_file(source / "model.safetensors"), load_file(staged / "model.safetensors")
    if before.keys() != after.keys():
        raise HubError(f"staging changed the tensor names: {sorted(before.keys() ^ after.keys())[:5]}")
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    if changed:
        raise HubError(f"staging changed tensors: {changed[:5]}")


def read_eval_results(path: Path) -> list[dict]:
    """Rows of one evaluation file (schema in the module docstring), checked and normalised."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise HubError(f"{path}: not a readable JSON file ({error})") from None
    rows = loaded.get("results", [loaded]) if isinstance(loaded, dict) else loaded
    if not isinstance(rows, list) or not rows:
        raise HubError(f"{path}: expected a result object, {{'results': [...]}} or a non-empty list of results")
    checked = []
    for index, row in enumerate(rows):
        missing = [key for key in ("dataset", "metric", "value") if not isinstance(row, dict) or key not in row]
        if missing:
            raise HubError(f"{path}: result {index} lacks {missing}")
        if isinstance(row["value"], bool) or not isinstance(row["value"], (int, float)):
            raise HubError(f"{path}: result {index}: value must be a number, found {row['value']!r}")
        task = row.get("task", "image-classification")
        task_type, protocol = EVAL_TASKS.get(task, (task, ""))
        checked.append({
            "task": task_type,
            "dataset": str(row["dataset"]),
            "dataset_name": str(row.get("dataset_name", row["dataset"])),
            "split": str(row.get("split", "test")),
            "protocol": str(row.get("protocol", protocol)),
            "metric": str(row["metric"]),
            "value": round(float(row["value"]), 4),
        })
    return checked


DEFAULT_TRAINING_TEXT = "Pretrained with DSeq-JEPA's self-supervised objective; no further training record was supplied."


def render_card(
    model,
    processor,
    repo_id: str,
    *,
    license: str,
    datasets: list[str] | None,
    base_model: str | None,
    provenance: dict,
    eval_rows: list[dict],
) -> ModelCard:
    """README.md from the model_card.md template for `model` (the encoder or a head) and its image
    `processor`, its YAML metadata checked."""
    config = model.config
    pipeline_tag = PIPELINE_TAGS[type(model).__name__]
    model_name = repo_id.split("/")[-1]
    eval_results = [
        EvalResult(
            task_type=row["task"], dataset_type=row["dataset"], dataset_name=row["dataset_name"],
            dataset_split=row["split"], metric_type=row["metric"], metric_value=row["value"],
            # The Hub groups results by task, dataset, config and split, and names a group after its
            # first result: the protocol as the dataset config keeps a linear probe and a k-NN apart.
            dataset_config=row["protocol"] or None, task_name=row["protocol"] or None,
            metric_name=f"{row['protocol']}: {row['metric']}" if row["protocol"] else None,
        )
        for row in eval_rows
    ] or None
    try:
        card_data = ModelCardData(
            library_name="transformers", pipeline_tag=pipeline_tag, tags=[*TAGS, pipeline_tag], license=license,
            datasets=datasets or None, base_model=base_model, model_name=model_name, eval_results=eval_results,
        )
    except (ValueError, TypeError) as error:
        raise HubError(f"the model card metadata does not validate: {error}") from None
    grid = config.image_size // config.patch_size
    converted_from = provenance.get("converted_from")
    source_text = (
        f"Converted from {converted_from}"
        + (f" ([{base_model}](https://huggingface.co/{base_model}))" if base_model else "")
        + f"; the conversion was checked against the source architecture (max abs difference "
        f"{provenance.get('max_abs_difference', float('nan')):.1e}, fp32)."
        if converted_from else ""
    )
    labels = [config.id2label[i] for i in sorted(config.id2label)] if pipeline_tag == "image-classification" else []
    card = ModelCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        is_classifier=pipeline_tag == "image-classification",
        labels=labels,
        size_text=f"width {config.hidden_size}, depth {config.num_hidden_layers}, patch {config.patch_size}, "
        f"{config.image_size} px",
        source_text=source_text,
        training_text=provenance.get("training_text") or DEFAULT_TRAINING_TEXT,
        card_notes=provenance.get("card_notes", ""),
        eval_rows=eval_rows,
        num_parameters=f"{model.num_parameters() / 1e6:.1f} M",
        num_tokens=grid * grid + int(config.use_cls_token),
        grid_size=grid,
        **{key: getattr(config, key) for key in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
            "image_size", "use_cls_token", "saliency_query", "saliency_layer", "min_region_fraction",
            "num_regions", "classifier_pooling",
        )},
        image_mean=list(processor.image_mean),
        image_std=list(processor.image_std),
    )
    check_card(card.content, pipeline_tag=pipeline_tag, expect_eval=len(eval_rows))
    return card


def check_card(content: str, *, pipeline_tag: str, expect_eval: int = 0) -> None:
    """Parse README.md back and check the metadata the Hub needs (locally: no network)."""
    try:
        data = ModelCard(content).data
    except (ValueError, TypeError) as error:
        raise HubError(f"the model card metadata does not parse: {error}") from None
    problems = []
    if data.library_name != "transformers":
        problems.append(f"library_name {data.library_name!r}, expected 'transformers'")
    if data.pipeline_tag != pipeline_tag:
        problems.append(f"pipeline_tag {data.pipeline_tag!r}, expected {pipeline_tag!r}")
    if not data.license:
        problems.append("no license")
    if len(data.eval_results or []) != expect_eval:
        problems.append(f"{len(data.eval_results or [])} eval results, expected {expect_eval}")
    if problems:
        raise HubError("the model card metadata does not validate: " + "; ".join(problems))


def stage(
    model_dir: str | os.PathLike,
    stage_dir: str | os.PathLike,
    *,
    repo_id: str,
    license: str | None = None,
    datasets: list[str] | None = None,
    base_model: str | None = None,
    eval_files: list[str | os.PathLike] | None = None,
) -> list[str]:
    """Write the folder to upload into `stage_dir` (absent or empty); returns its file names."""
    model_dir, stage_dir = Path(model_dir), Path(stage_dir)
    check_repo_id(repo_id)
    check_empty_folder(stage_dir)  # before loading anything
    loaded, folder = load_checked(model_dir)
    model, processor = loaded.model, loaded.processor
    provenance_file = folder / "conversion.json"
    provenance = json.loads(provenance_file.read_text()) if provenance_file.is_file() else {}
    license = license or provenance.get("license")
    if not license:
        raise HubError(f"{folder}: no license known for these weights: pass --license (e.g. apache-2.0)")
    eval_paths = [Path(path) for path in eval_files or []]
    if (folder / EVAL_FILE).is_file():
        eval_paths.insert(0, folder / EVAL_FILE)
    eval_rows = [row for path in eval_paths for row in read_eval_results(path)]
    card = render_card(
        model, processor, repo_id, license=license, datasets=datasets,
        base_model=base_model or provenance.get("base_model"), provenance=provenance, eval_rows=eval_rows,
    )

    with atomic_directory(stage_dir) as partial:
        save_pretrained_with_pipeline(model, processor, partial)
        for name in EXTRA_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, partial / name)
        if eval_rows:
            (partial / EVAL_FILE).write_text(json.dumps({"results": eval_rows}, indent=1) + "\n")
        card.save(partial / "README.md")
        check_same_tensors(folder, partial)
    return sorted(str(path.relative_to(stage_dir)) for path in stage_dir.rglob("*") if path.is_file())


def upload_failure(error: Exception) -> str:
    """What went wrong in an upload, in one line."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return f"authentication refused (HTTP {status}): set HF_TOKEN to a token with write access, or `hf auth login`"
    if isinstance(error, TransportError):
        reason = " ".join(str(error).split()) or type(error).__name__
        return f"no connection to {os.environ.get('HF_ENDPOINT') or 'the Hub'} ({reason})"
    return " ".join(str(error).split())


def push(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    dry_run: bool = False,
    stage_dir: str | os.PathLike | None = None,
    log=print,
    **card_options,
):
    """Stage `model_dir` and upload it in one commit (`HF_ENDPOINT`, `HF_TOKEN` honoured).

    dry_run: stage into `stage_dir` and stop before any network call. Returns the CommitInfo, or the
    staged file names on a dry run.
    """
    if dry_run and stage_dir is None:
        raise HubError("--dry-run needs --stage-dir, the folder that shows what would be uploaded")
    temporary = None if stage_dir is not None else tempfile.mkdtemp(prefix="dseqjepa-push-")
    folder = Path(stage_dir) if stage_dir is not None else Path(temporary) / "staged"
    try:
        names = stage(model_dir, folder, repo_id=repo_id, **card_options)
        log(f"staged {len(names)} files in {folder}: {', '.join(names)}"
            + (f" (dry run: nothing uploaded; `hf upload {repo_id} {folder}` uploads them)" if dry_run else ""))
        if dry_run:
            return names
        api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None)
        message = commit_message or f"Upload DSeq-JEPA model with dseqjepa-hub {__version__}"
        # create_commit, not upload_folder: with hf_xet installed, upload_folder may split a folder
        # into several commits; the staged folder goes up as exactly one.
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in names]
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            if revision and not create_pr:
                api.create_branch(repo_id, repo_type="model", branch=revision, exist_ok=True)
            commit = api.create_commit(
                repo_id=repo_id, repo_type="model", operations=operations, commit_message=message,
                revision=revision, create_pr=create_pr,
            )
        except (HfHubHTTPError, OSError, TransportError) as error:  # network, authentication, refusal by the Hub
            kept, temporary = folder, None  # the staged folder outlives the failure: upload it later
            raise HubError(f"upload to {repo_id} failed: {upload_failure(error)}; the staged folder is kept: {kept} "
                           f"(upload it later with `hf upload {repo_id} {kept}`)") from None
        log(f"uploaded to {getattr(commit, 'pr_url', None) or getattr(commit, 'commit_url', repo_id)}")
        return commit
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
