"""Step-level parity of `dseqjepa train` with the authors' code.

The references are recordings of the authors' own training loops (tests/fixtures/parity, made by
scripts/make_parity_fixtures.py, whose docstring gives the commands and the two commits): the
DSeq-JEPA release (SkyShunsuke/DSeq-JEPA) and I-JEPA (facebookresearch/ijepa), tiny models, fp32,
on the CPU. No checkout and no network here: the recorded initial weights are written as release
checkpoints and read back through `dseqjepa convert`'s readers, and the project's trainer runs its
real `train_step` on the recorded images. docs/PARITY.md has the table of what matches how well.

Tolerance: masks and region choices exact; every fp32 quantity within REL = 1e-5 of the
reference's largest magnitude, tensor by tensor (max |ours - theirs| / max |theirs|).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dseqjepa_convert import READERS
from dseqjepa_hub.modeling_dseqjepa import DSeqJEPAModel
from dseqjepa_hub.regions import extract_regions, otsu_threshold
from dseqjepa_train import trainer as trainer_module
from dseqjepa_train.config import TrainConfig
from dseqjepa_train.distributed import DistributedContext
from dseqjepa_train.sequences import region_sequence
from dseqjepa_train.trainer import Pretrainer, parameter_groups

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
META = json.loads((FIXTURES / "parity.json").read_text())
S = META["settings"]
GRID = (S["image_size"] // S["patch_size"],) * 2
REL = 1e-5
RELEASE, IJEPA = "SkyShunsuke/DSeq-JEPA", "facebookresearch/ijepa"


def fixture(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / f"{name}.safetensors"))


INIT = fixture("init")
IMAGES = INIT["images"].float()


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (0 when both are zero)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, (tuple(actual.shape), tuple(expected.shape))
    scale = expected.abs().max()
    difference = (actual - expected).abs().max()
    return float(difference / scale) if scale > 0 else float(difference)


def assert_relative(actual: torch.Tensor, expected: torch.Tensor, what: str, tolerance: float = REL) -> float:
    difference = relative_difference(actual, expected)
    assert difference <= tolerance, f"{what}: relative difference {difference:.2e} > {tolerance:g}"
    return difference


def init_state(prefix: str, drop_cls: bool = False) -> dict[str, torch.Tensor]:
    state = {k[len(prefix):]: v for k, v in INIT.items() if k.startswith(prefix)}
    if drop_cls:
        state.pop("cls_token")
    return state


# ----------------------------------------------------------------------------- the project's side


def read_release(tmp_path: Path, fmt: str):
    """The recorded initial weights as the release's training dict (DDP `module.` names), read back
    through `dseqjepa convert`'s reader for `fmt` ("dseq-release" or "ijepa-release")."""
    encoder = init_state("init.encoder.", drop_cls=fmt == "ijepa-release")
    predictor = init_state("init.predictor.")
    ddp = lambda state: {f"module.{name}": tensor for name, tensor in state.items()}  # noqa: E731
    path = tmp_path / f"{fmt}.pth.tar"
    torch.save({"epoch": 0, "encoder": ddp(encoder), "predictor": ddp(predictor), "target_encoder": ddp(encoder)}, path)
    return READERS[fmt](path, encoder="context", num_heads=S["num_attention_heads"], with_predictor=True)


def make_trainer(tmp_path: Path, fmt: str, **overrides) -> Pretrainer:
    """A Pretrainer at the fixtures' sizes and schedule (20 steps of 4 images: 5 per epoch, 4 epochs),
    holding the converted initial weights."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    source = read_release(tmp_path, fmt)
    layout = source.layout
    model = dict(
        image_size=layout.image_size, patch_size=layout.patch_size, num_channels=layout.num_channels,
        hidden_size=layout.hidden_size, num_hidden_layers=layout.num_hidden_layers,
        num_attention_heads=layout.num_attention_heads, intermediate_size=layout.intermediate_size,
        qkv_bias=layout.qkv_bias, use_cls_token=layout.use_cls_token, saliency_layer=S["saliency_layer"],
        min_region_fraction=S["min_region_fraction"], num_regions=S["num_regions"], **source.config_overrides,
    )
    values = dict(
        model_preset=None, model=model, context_mode="masked", release_compat=True,
        context_scale=tuple(S["enc_mask_scale"]), target_scale=tuple(S["pred_mask_scale"]),
        target_aspect_ratio=tuple(S["aspect_ratio"]), num_targets=S["num_pred_masks"], min_keep=S["min_keep"],
        batch_size=S["batch_size"], num_workers=0, epochs=S["epochs"], warmup_epochs=S["warmup_epochs"],
        start_lr=S["start_lr"], lr=S["lr"], final_lr=S["final_lr"], weight_decay=S["weight_decay"],
        final_weight_decay=S["final_weight_decay"], ema_start=S["ema"][0], ema_end=S["ema"][1], grad_clip=None,
        precision="fp32", seed=S["seed"],
    )
    config = TrainConfig(**{**values, **overrides})
    # The trainer only needs a list of `iterations_per_epoch * batch_size` files to size its epochs;
    # the step below is fed the recorded images directly.
    listing = tmp_path / "images.txt"
    listing.write_text("missing.png\n" * (S["iterations_per_epoch"] * S["batch_size"]))
    trainer = Pretrainer(config, listing, tmp_path / "run", DistributedContext(0, 1, 0, torch.device("cpu")))
    assert trainer.steps_per_epoch == S["iterations_per_epoch"]
    trainer.context_encoder.load_state_dict(source.encoder, strict=True)
    trainer.target_encoder.load_state_dict(source.encoder, strict=True)
    trainer.predictor.load_state_dict(source.predictor, strict=True)
    return trainer


class StepRecorder:
    """What one `train_step` computed: its task, predictions, gradients (before the optimizer step).

    With `reference_gradients` (name -> tensor), the optimizer step is then taken from those
    instead of the project's own: the optimizer, schedules and EMA are checked on identical
    gradients. (Adam's first update, lr * g / (|g| + eps), turns the 1e-7 rounding differences
    of gradients near eps = 1e-8 into update differences up to ~1e-4 of the largest update.)
    """

    def __init__(self, trainer: Pretrainer, reference_gradients: dict[str, torch.Tensor] | None = None):
        self.trainer = trainer
        self.reference_gradients = reference_gradients
        self.gradients: dict[str, torch.Tensor] = {}
        trainer.optimizer.register_step_pre_hook(self._before_step)
        trainer.student.register_forward_hook(self._after_forward)

    def _before_step(self, optimizer, args, kwargs):
        parameters = dict(self.trainer.student.named_parameters())
        self.gradients = {name: p.grad.detach().clone() for name, p in parameters.items() if p.grad is not None}
        if self.reference_gradients is not None:
            assert set(self.reference_gradients) == set(self.gradients)
            for name, gradient in self.reference_gradients.items():
                parameters[name].grad.copy_(gradient)

    def _after_forward(self, module, inputs, output):
        self.task = inputs[1]
        self.predictions, self.positions, self.keep = (t.detach() for t in output)

    def step(self) -> dict:
        return self.trainer.train_step(IMAGES.clone())


def index_masks_to_grids(indices: torch.Tensor) -> torch.Tensor:
    """(..., K) patch indices -> (..., h, w) bool."""
    grids = torch.zeros(*indices.shape[:-1], GRID[0] * GRID[1], dtype=torch.bool)
    grids.scatter_(-1, indices, True)
    return grids.view(*indices.shape[:-1], *GRID)


def assert_update(after: torch.Tensor, expected_after: torch.Tensor, before: torch.Tensor, what: str,
                  tolerance: float = REL) -> float:
    """One optimizer or EMA step: the update (after - before) against the reference's, to `tolerance`
    of the largest reference update, plus the float32 rounding of the stored weights themselves
    (two roundings of the largest weight, 2 eps max|w|: the last bit of a weight). Weight decay
    or LR off by one step, or an EMA momentum off by one, is orders of magnitude larger.
    Returns max |update - reference update| / max |reference update|."""
    ours, theirs = (after.double() - before.double()), (expected_after.double() - before.double())
    difference = float((ours - theirs).abs().max())
    scale = float(theirs.abs().max())
    allowed = tolerance * scale + 2 * torch.finfo(torch.float32).eps * float(expected_after.abs().max())
    assert difference <= allowed, f"{what}: update differs by {difference:.2e} (allowed {allowed:.2e}, largest update {scale:.2e})"
    return difference / scale if scale > 0 else difference


def check_weights_after(trainer: Pretrainer, reference: dict, what: str, target: bool = True) -> dict[str, float]:
    """Every trained tensor after the step (optimizer, schedules, EMA) against the reference's."""
    worst = {}
    modules = {"encoder": trainer.context_encoder, "predictor": trainer.predictor}
    if target:
        modules["target_encoder"] = trainer.target_encoder
    for prefix, module in modules.items():
        state = module.state_dict()
        start = "init.encoder." if prefix == "target_encoder" else f"init.{prefix}."
        names = [k for k in reference if k.startswith(f"after.{prefix}.")]
        assert names, f"no after.{prefix}.* in the fixture"
        for key in names:
            name = key[len(f"after.{prefix}."):]
            worst[key] = assert_update(state[name], reference[key], INIT[start + name], f"{what}: {key}")
            assert_relative(state[name], reference[key], f"{what}: {key}")
    return worst


# ----------------------------------------------------------------------------- the fixtures


def test_fixtures_record_the_two_commits_and_every_patch():
    repositories = META["repositories"]
    for repo in (RELEASE, IJEPA):
        commit = repositories[repo]["commit"]
        assert len(commit) == 40 and int(commit, 16) >= 0, (repo, commit)
        assert META["patches"][repo], f"no run-time patches listed for {repo}"
    assert any("cuda" in patch.lower() for patch in META["patches"][RELEASE])
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 600_000


# ----------------------------------------------------------------------------- saliency and regions


def test_saliency_and_region_masks_are_the_releases(tmp_path):
    release = fixture("release_dseq")
    regions = release["regions"].view(S["batch_size"], S["num_regions"], *GRID)
    # Otsu's threshold of their 8-bit maps, and the regions of their saliency, exactly.
    levels = release["saliency_uint8"].flatten(1).long()
    assert otsu_threshold(levels).tolist() == [int(t) for t in META["runs"]["release-dseq"]["otsu_thresholds"]]
    ours = extract_regions(release["saliency"], min_region_fraction=S["min_region_fraction"],
                           num_regions=S["num_regions"])
    assert torch.equal(ours.masks, regions)
    # The project's own saliency, from the converted target encoder.
    source = read_release(tmp_path, "dseq-release")
    config = source.layout.config(**source.config_overrides, saliency_layer=S["saliency_layer"])
    model = DSeqJEPAModel(config).eval()
    model.load_state_dict(source.encoder, strict=True)
    with torch.no_grad():
        saliency = model(IMAGES, output_saliency=True).saliency
    assert_relative(saliency, release["saliency"], "saliency")
    ours = extract_regions(saliency, min_region_fraction=S["min_region_fraction"], num_regions=S["num_regions"])
    assert torch.equal(ours.masks, regions)
    # The fixture's images give 0, 1, 1 and 4 kept regions, and other regions with 4-connectivity.
    assert ours.valid[:, :-1].sum(1).tolist() == [0, 1, 1, 4]
    four = extract_regions(release["saliency"], min_region_fraction=S["min_region_fraction"],
                           num_regions=S["num_regions"], connectivity=4)
    assert not torch.equal(four.masks, regions)


# ----------------------------------------------------------------------------- the DSeq step


def test_release_compat_dseq_step_is_the_releases(tmp_path):
    """method dseq, release_compat: the release's step: its contexts and targets, loss, predictions,
    every gradient, and its AdamW + schedules + EMA update."""
    release = fixture("release_dseq")
    theirs = {k[len("grad."):]: v for k, v in release.items() if k.startswith("grad.")}
    trainer = make_trainer(tmp_path, "dseq-release", method="dseq", release_compat=True)
    recorder = StepRecorder(trainer, reference_gradients=theirs)
    record = recorder.step()
    assert record["method"] == "dseq"

    # Their rows (image, step) with a non-empty target are the project's prediction rows, in order.
    theirs_valid = release["target_masks"].any(1)
    task = recorder.task
    assert torch.equal(task.target_masks.flatten(1), release["target_masks"][theirs_valid])
    assert torch.equal(task.context_masks.flatten(1), ~release["context_masks"][theirs_valid])

    assert_relative(torch.tensor([record["loss"]]), release["loss"], "loss")
    assert_relative(recorder.predictions[recorder.keep], release["predictions"], "predictions")

    assert set(recorder.gradients) == set(theirs)  # mask_token: no gradient in either
    assert META["runs"]["release-dseq"]["missing_grads"] == ["predictor.mask_token"]
    for name, gradient in theirs.items():
        assert_relative(recorder.gradients[name], gradient, f"gradient of {name}")

    check_weights_after(trainer, release, "release DSeq step")


def test_paper_contexts_differ_from_the_release_exactly_at_its_lagging_steps(tmp_path):
    """release_compat false: the paper's contexts R1 u .. u Rk against the release's recorded ones
    (docs/METHOD.md section 5). They differ at step k >= 2 exactly where R_k is non-empty; every target,
    and every other context, is the same."""
    release = fixture("release_dseq")
    batch, steps = S["batch_size"], S["num_regions"] - 1
    regions = release["regions"].view(batch, S["num_regions"], *GRID)
    paper_contexts, paper_targets = region_sequence(regions, release_compat=False)
    release_contexts = (~release["context_masks"]).view(batch, steps, *GRID)
    assert torch.equal(paper_targets.flatten(2), release["target_masks"].view(batch, steps, -1))
    differing = {(b, k + 1) for b in range(batch) for k in range(steps)
                 if not torch.equal(paper_contexts[b, k], release_contexts[b, k])}
    # images 0-2: no region or one (R2.. empty: the contexts agree), image 3: four regions
    assert differing == {(3, 2), (3, 3), (3, 4)}
    lagging = {(b, k) for b in range(batch) for k in range(2, steps + 1) if regions[b, k - 1].any()}
    assert differing == lagging
    for b, k in differing:  # the release's context lacks exactly R_k
        assert torch.equal(paper_contexts[b, k - 1] & ~release_contexts[b, k - 1], regions[b, k - 1])
    # and the trainer's paper step uses the paper's contexts
    trainer = make_trainer(tmp_path, "dseq-release", method="dseq", release_compat=False, context_mode="gather")
    recorder = StepRecorder(trainer)
    recorder.step()
    valid = paper_targets.flatten(2).any(2).flatten()
    assert torch.equal(recorder.task.context_masks, paper_contexts.flatten(0, 1)[valid])


# ----------------------------------------------------------------------------- the I-JEPA step


@pytest.fixture
def ijepa_masks(monkeypatch):
    """The project's trainer draws the masks I-JEPA's collator drew (same blocks, same truncation)."""
    recorded = fixture("ijepa")
    context = index_masks_to_grids(recorded["collator_masks_enc"][0])  # (B, h, w)
    targets = index_masks_to_grids(recorded["collator_masks_pred"]).transpose(0, 1)  # (B, T, h, w)
    monkeypatch.setattr(trainer_module, "multiblock_masks", lambda *args, **kwargs: (context, targets))
    return recorded


@pytest.mark.parametrize("context_mode", ["gather", "masked"])
def test_ijepa_step_is_ijepas(tmp_path, ijepa_masks, context_mode):
    """method ijepa on I-JEPA's masks: its loss, predictions, every gradient, and its AdamW +
    LR / weight-decay step. (The EMA of the target: see the next test.)"""
    recorded = ijepa_masks
    gradients = {k[len("grad."):]: v for k, v in recorded.items() if k.startswith("grad.")}
    trainer = make_trainer(tmp_path, "ijepa-release", method="ijepa", release_compat=False, context_mode=context_mode)
    recorder = StepRecorder(trainer, reference_gradients=gradients)
    record = recorder.step()
    assert record["method"] == "ijepa"
    assert_relative(torch.tensor([record["loss"]]), recorded["loss"], "loss")
    batch, num_targets = S["batch_size"], S["num_pred_masks"]
    theirs = recorded["predictions"]  # (T * B, K, D), block t of image b at t * B + b
    theirs = theirs.view(num_targets, batch, *theirs.shape[1:]).transpose(0, 1).flatten(0, 1)
    assert recorder.keep.all()  # I-JEPA's blocks of one batch have one size
    assert_relative(recorder.predictions, theirs, "predictions")
    assert set(recorder.gradients) == set(gradients)
    for name, gradient in gradients.items():
        assert_relative(recorder.gradients[name], gradient, f"gradient of {name}")
    check_weights_after(trainer, recorded, "I-JEPA step", target=False)


def test_ijepa_first_ema_momentum_is_one_step_behind_the_release(tmp_path, ijepa_masks):
    """A quirk of I-JEPA's loop (docs/PARITY.md): its momentum generator yields ema_start for the
    first update, while its LR and weight-decay schedulers (and all four schedules of the DSeq
    release) have already ticked once. The project follows the release: momentum(step + 1)."""
    recorded = ijepa_masks
    gradients = {k[len("grad."):]: v for k, v in recorded.items() if k.startswith("grad.")}
    trainer = make_trainer(tmp_path, "ijepa-release", method="ijepa", release_compat=False, context_mode="gather")
    record = StepRecorder(trainer, reference_gradients=gradients).step()
    release_momentum = META["runs"]["release-dseq"]["ema"]["0"]
    assert record["ema"] == pytest.approx(release_momentum, abs=1e-12)
    ema_start = S["ema"][0]
    assert release_momentum > ema_start
    context = trainer.context_encoder.state_dict()
    target = trainer.target_encoder.state_dict()
    ours_updates, their_updates = [], []
    for key in [k for k in recorded if k.startswith("after.target_encoder.")]:
        name = key[len("after.target_encoder."):]
        before, their_context = INIT["init.encoder." + name].double(), recorded["after.encoder." + name].double()
        ijepa_target = before + (1 - ema_start) * (their_context - before)  # I-JEPA: momentum ema_start
        ours_target = before + (1 - release_momentum) * (context[name].double() - before)  # the release's m(1)
        assert_update(recorded[key], ijepa_target, before, f"I-JEPA's EMA of {name}")
        assert_update(target[name], ours_target, before, f"the project's EMA of {name}")
        ours_updates.append((target[name].double() - before).flatten())
        their_updates.append((recorded[key].double() - before).flatten())
    # (1 - m) is 0.0038 here against I-JEPA's 0.004: the target updates differ by 5 %
    assert relative_difference(torch.cat(ours_updates), torch.cat(their_updates)) > 0.04


@pytest.mark.parametrize("run", ["release-dseq", "ijepa"])
def test_a_step_on_the_projects_own_gradients_lands_on_their_weights(tmp_path, monkeypatch, run):
    """End to end, without substituting their gradients: the weights after the step, encoder,
    predictor and target, within REL of theirs (see StepRecorder on why updates are compared on
    identical gradients)."""
    if run == "ijepa":
        recorded = fixture("ijepa")
        context = index_masks_to_grids(recorded["collator_masks_enc"][0])
        targets = index_masks_to_grids(recorded["collator_masks_pred"]).transpose(0, 1)
        monkeypatch.setattr(trainer_module, "multiblock_masks", lambda *args, **kwargs: (context, targets))
        trainer = make_trainer(tmp_path, "ijepa-release", method="ijepa", release_compat=False, context_mode="gather")
    else:
        recorded = fixture("release_dseq")
        trainer = make_trainer(tmp_path, "dseq-release", method="dseq", release_compat=True)
    trainer.train_step(IMAGES.clone())
    modules = {"encoder": trainer.context_encoder, "predictor": trainer.predictor}
    if run == "release-dseq":  # I-JEPA's target: one EMA step apart (the test above)
        modules["target_encoder"] = trainer.target_encoder
    for prefix, module in modules.items():
        state = module.state_dict()
        for key in [k for k in recorded if k.startswith(f"after.{prefix}.")]:
            assert_relative(state[key[len(f"after.{prefix}."):]], recorded[key], key)


# ----------------------------------------------------------------------------- the release's I-JEPA branch


def test_release_ijepa_branch_scrambles_its_masks_and_is_otherwise_release_compat(tmp_path, monkeypatch):
    """A quirk of the release (docs/PARITY.md): the I-JEPA steps of its mixed curriculum turn the
    collator's (B, K) index lists into masks with `indices_to_binary_mask(...).transpose(1, 2)
    .reshape(-1, N)`, which mixes images and patches: the masks its encoder and predictor get are
    not I-JEPA's blocks. Given the masks it actually used, the project's release_compat step gives
    its loss and predictions."""
    recorded = fixture("release_ijepa")
    batch, num_targets, patches = S["batch_size"], S["num_pred_masks"], GRID[0] * GRID[1]
    blocks_context = index_masks_to_grids(recorded["collator_masks_enc"]).flatten(2)  # (1, B, N)
    blocks_targets = index_masks_to_grids(recorded["collator_masks_pred"]).flatten(2)  # (T, B, N)
    scrambled_context = blocks_context.transpose(1, 2).reshape(-1, patches)
    scrambled_targets = blocks_targets.transpose(1, 2).reshape(-1, patches)
    assert torch.equal(~recorded["encoder_masks"], scrambled_context)
    assert torch.equal(recorded["predictor_target_masks"], scrambled_targets)
    assert not torch.equal(scrambled_context, blocks_context[0])  # not the collator's context blocks
    assert not torch.equal(scrambled_targets, blocks_targets.transpose(0, 1).flatten(0, 1))

    context = scrambled_context.view(batch, *GRID)
    targets = scrambled_targets.view(batch, num_targets, *GRID)
    monkeypatch.setattr(trainer_module, "multiblock_masks", lambda *args, **kwargs: (context, targets))
    trainer = make_trainer(tmp_path, "dseq-release", method="ijepa", release_compat=True)
    recorder = StepRecorder(trainer)
    record = recorder.step()
    assert_relative(torch.tensor([record["loss"]]), recorded["loss"], "loss")
    assert_relative(recorder.predictions[recorder.keep], recorded["predictions"], "predictions")


# ----------------------------------------------------------------------------- optimiser, schedules, curriculum


def test_weight_decay_groups_are_the_releases(tmp_path):
    """Decay on every matrix (the learned tokens included), none on biases and norms: both releases."""
    trainer = make_trainer(tmp_path, "dseq-release", method="dseq", release_compat=False, context_mode="gather")
    decay, no_decay = parameter_groups(trainer.student)
    names = {id(p): n for n, p in trainer.student.named_parameters()}
    ours = {names[id(p)] for p in decay["params"]}
    for run in ("release-dseq", "ijepa"):
        groups = META["runs"][run]["param_groups"]
        theirs = {n for g in groups if g["weight_decay_scheduled"] for n in g["params"] if not n.endswith("pos_embed")}
        if run == "ijepa":
            ours_ijepa = ours - {"encoder.cls_token"}
            assert ours_ijepa == theirs, run
        else:
            assert ours == theirs, run
    assert {"encoder.cls_token", "predictor.mask_token"} <= ours


def test_schedules_are_the_releases_at_every_iteration(tmp_path):
    """LR, weight decay, EMA momentum and lambda of every iteration of the release's mixed run, as
    the trainer sets them; I-JEPA's first LR and weight decay."""
    schedule = META["runs"]["release-mixed"]["schedule"]
    assert META["runs"]["release-mixed"]["finished"] and len(schedule) == S["epochs"] * S["iterations_per_epoch"]
    trainer = make_trainer(tmp_path, "dseq-release", method="mixed", release_compat=False, context_mode="gather")
    for entry in schedule:
        trainer.step = entry["iteration"]
        values = trainer.set_hyperparameters()
        for key in ("lr", "weight_decay", "ema", "lambda"):
            assert values[key] == pytest.approx(entry[key], rel=1e-12, abs=1e-15), (entry["iteration"], key)
        groups = trainer.optimizer.param_groups
        assert [g["weight_decay"] for g in groups] == pytest.approx([entry["weight_decay"], 0.0])
    trainer.step = 0
    values = trainer.set_hyperparameters()
    ijepa = META["runs"]["ijepa"]
    assert (values["lr"], values["weight_decay"]) == pytest.approx((ijepa["lr"], ijepa["weight_decay"]), rel=1e-12)


class _Draws:
    """The trainer module's `torch`, with its uniform draws replaced by the given values."""

    def __init__(self, values):
        self.values = list(values)

    def __getattr__(self, name):
        return getattr(torch, name)

    def rand(self, *args, **kwargs):
        return torch.tensor([self.values.pop(0)])


class _Decided(Exception):
    pass


def test_mixed_draws_dseq_steps_with_the_releases_probability(tmp_path, monkeypatch):
    """The curriculum: at every iteration, a DSeq step with the release's probability lambda. Both
    decide with one uniform draw u: DSeq when u < lambda."""
    schedule = META["runs"]["release-mixed"]["schedule"]
    assert {entry["branch"] for entry in schedule} == {"dseq", "ijepa"}  # the release's run took both
    trainer = make_trainer(tmp_path, "dseq-release", method="mixed", release_compat=False, context_mode="gather")
    for entry in schedule:
        trainer.step = entry["iteration"]
        assert trainer.set_hyperparameters()["lambda"] == pytest.approx(entry["lambda"], rel=1e-12)
    decisions = []

    def decided(self, images, use_dseq, generator, monitor=False):
        decisions.append(use_dseq)
        raise _Decided

    monkeypatch.setattr(trainer_module.Pretrainer, "prediction_task", decided)
    middle = next(entry for entry in schedule if 0.3 < entry["lambda"] < 0.7)
    monkeypatch.setattr(trainer_module, "torch", _Draws([middle["lambda"] - 1e-6, middle["lambda"] + 1e-6]))
    for _ in range(2):
        trainer.step = middle["iteration"]
        with pytest.raises(_Decided):
            trainer.train_step(IMAGES.clone())
    assert decisions == [True, False]


# ----------------------------------------------------------------------------- the table of docs/PARITY.md


def report() -> str:
    """The measured differences, as the markdown table of docs/PARITY.md:
    `python tests/test_release_parity.py` prints it."""
    import tempfile

    rows = []

    def row(quantity, difference, tolerance):
        rows.append(f"| {quantity} | {difference} | {tolerance} |")

    def worst(pairs):
        return max(relative_difference(a, b) for a, b in pairs)

    def update_worst(state, reference, prefix, start):
        """(worst relative difference of the updates, worst difference of the weights in float32 ulps)"""
        relative, ulps = 0.0, 0.0
        for key in [k for k in reference if k.startswith(f"after.{prefix}.")]:
            name = key[len(f"after.{prefix}."):]
            ours, theirs, before = state[name], reference[key], INIT[start + name]
            relative = max(relative, relative_difference(ours - before, theirs - before))
            spacing = torch.nextafter(theirs.abs(), torch.tensor(float("inf"))) - theirs.abs()
            ulps = max(ulps, float(((ours - theirs).abs() / spacing).max()))
        return f"update {relative:.1e}; weights {ulps:.0f} ulp"

    def weights_worst(trainer, reference, prefixes):
        modules = {"encoder": trainer.context_encoder, "predictor": trainer.predictor,
                   "target_encoder": trainer.target_encoder}
        return max(relative_difference(modules[p].state_dict()[k[len(f"after.{p}."):]], reference[k])
                   for p in prefixes for k in reference if k.startswith(f"after.{p}."))

    def masks_from(recorded):
        context = index_masks_to_grids(recorded["collator_masks_enc"][0])
        targets = index_masks_to_grids(recorded["collator_masks_pred"]).transpose(0, 1)
        return lambda *args, **kwargs: (context, targets)

    release = fixture("release_dseq")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        # saliency and regions
        source = read_release(tmp, "dseq-release")
        model = DSeqJEPAModel(source.layout.config(**source.config_overrides, saliency_layer=S["saliency_layer"])).eval()
        model.load_state_dict(source.encoder)
        with torch.no_grad():
            saliency = model(IMAGES, output_saliency=True).saliency
        regions = extract_regions(saliency, min_region_fraction=S["min_region_fraction"], num_regions=S["num_regions"])
        theirs = release["regions"].view_as(regions.masks)
        row("saliency A (B, h, w)", f"{relative_difference(saliency, release['saliency']):.1e}", "1e-5")
        levels = release["saliency_uint8"].flatten(1).long()
        wrong = sum(a != int(b) for a, b in zip(otsu_threshold(levels).tolist(),
                                                META["runs"]["release-dseq"]["otsu_thresholds"]))
        row("Otsu thresholds of their 8-bit maps", f"{wrong} of {S['batch_size']} differ", "exact")
        row("region masks (B, 5, h, w), from our saliency", f"{int((regions.masks != theirs).sum())} patches differ",
            "exact")

        # the release's DSeq step
        gradients = {k[len("grad."):]: v for k, v in release.items() if k.startswith("grad.")}
        trainer = make_trainer(tmp / "dseq", "dseq-release", method="dseq", release_compat=True)
        recorder = StepRecorder(trainer, reference_gradients=gradients)
        record = recorder.step()
        valid = release["target_masks"].any(1)
        same = (torch.equal(recorder.task.context_masks.flatten(1), ~release["context_masks"][valid])
                and torch.equal(recorder.task.target_masks.flatten(1), release["target_masks"][valid]))
        row("DSeq (release_compat): contexts and targets of every step", "identical" if same else "DIFFER", "exact")
        row("DSeq (release_compat): loss", f"{relative_difference(torch.tensor([record['loss']]), release['loss']):.1e}",
            "1e-5")
        row("DSeq (release_compat): predictions", f"{relative_difference(recorder.predictions[recorder.keep], release['predictions']):.1e}", "1e-5")
        row(f"DSeq (release_compat): gradients ({len(gradients)} tensors, worst)",
            f"{worst((recorder.gradients[n], g) for n, g in gradients.items()):.1e}", "1e-5")
        for prefix, start in (("encoder", "init.encoder."), ("predictor", "init.predictor."),
                              ("target_encoder", "init.encoder.")):
            state = {"encoder": trainer.context_encoder, "predictor": trainer.predictor,
                     "target_encoder": trainer.target_encoder}[prefix].state_dict()
            row(f"DSeq: AdamW + schedules + EMA step of the {prefix.replace('_', ' ')}, on their gradients (worst tensor)",
                update_worst(state, release, prefix, start), "update 1e-5 + 2 eps max abs w")
        trainer = make_trainer(tmp / "dseq-own", "dseq-release", method="dseq", release_compat=True)
        trainer.train_step(IMAGES.clone())
        row("DSeq: weights after the step, on our own gradients (worst tensor)",
            f"{weights_worst(trainer, release, ('encoder', 'predictor', 'target_encoder')):.1e}", "1e-5")

        # I-JEPA's step
        recorded = fixture("ijepa")
        gradients = {k[len("grad."):]: v for k, v in recorded.items() if k.startswith("grad.")}
        original = trainer_module.multiblock_masks
        trainer_module.multiblock_masks = masks_from(recorded)
        try:
            for mode in ("gather", "masked"):
                trainer = make_trainer(tmp / f"ijepa-{mode}", "ijepa-release", method="ijepa", release_compat=False,
                                       context_mode=mode)
                recorder = StepRecorder(trainer, reference_gradients=gradients)
                record = recorder.step()
                theirs = recorded["predictions"]
                theirs = theirs.view(S["num_pred_masks"], S["batch_size"], *theirs.shape[1:]).transpose(0, 1).flatten(0, 1)
                row(f"I-JEPA ({mode}): loss", f"{relative_difference(torch.tensor([record['loss']]), recorded['loss']):.1e}", "1e-5")
                row(f"I-JEPA ({mode}): predictions", f"{relative_difference(recorder.predictions, theirs):.1e}", "1e-5")
                row(f"I-JEPA ({mode}): gradients ({len(gradients)} tensors, worst)",
                    f"{worst((recorder.gradients[n], g) for n, g in gradients.items()):.1e}", "1e-5")
                if mode == "gather":
                    for prefix in ("encoder", "predictor"):
                        state = {"encoder": trainer.context_encoder, "predictor": trainer.predictor}[prefix].state_dict()
                        row(f"I-JEPA: AdamW + schedules step of the {prefix}, on its gradients (worst tensor)",
                            update_worst(state, recorded, prefix, f"init.{prefix}."), "update 1e-5 + 2 eps max abs w")
                    ours = torch.cat([(trainer.target_encoder.state_dict()[k[len("after.target_encoder."):]]
                                       - INIT["init.encoder." + k[len("after.target_encoder."):]]).flatten()
                                      for k in recorded if k.startswith("after.target_encoder.")])
                    theirs_t = torch.cat([(recorded[k] - INIT["init.encoder." + k[len("after.target_encoder."):]]).flatten()
                                          for k in recorded if k.startswith("after.target_encoder.")])
                    row("I-JEPA: EMA update of the target (its momentum is ema_start, ours the release's m(1))",
                        f"{relative_difference(ours, theirs_t):.1e}", "differs by design: (1-m) 0.0038 vs 0.004")
            trainer = make_trainer(tmp / "ijepa-own", "ijepa-release", method="ijepa", release_compat=False,
                                   context_mode="gather")
            trainer.train_step(IMAGES.clone())
            row("I-JEPA: context encoder and predictor after the step, on our own gradients (worst tensor)",
                f"{weights_worst(trainer, recorded, ('encoder', 'predictor')):.1e}", "1e-5")

            # the release's I-JEPA branch, on the masks it actually used
            branch = fixture("release_ijepa")
            context = (~branch["encoder_masks"]).view(S["batch_size"], *GRID)
            targets = branch["predictor_target_masks"].view(S["batch_size"], S["num_pred_masks"], *GRID)
            trainer_module.multiblock_masks = lambda *args, **kwargs: (context, targets)
            trainer = make_trainer(tmp / "branch", "dseq-release", method="ijepa", release_compat=True)
            recorder = StepRecorder(trainer)
            record = recorder.step()
            row("release's I-JEPA branch (release_compat, on its scrambled masks): loss",
                f"{relative_difference(torch.tensor([record['loss']]), branch['loss']):.1e}", "1e-5")
            row("release's I-JEPA branch: predictions",
                f"{relative_difference(recorder.predictions[recorder.keep], branch['predictions']):.1e}", "1e-5")
        finally:
            trainer_module.multiblock_masks = original

        # schedules and the curriculum
        schedule = META["runs"]["release-mixed"]["schedule"]
        trainer = make_trainer(tmp / "mixed", "dseq-release", method="mixed", release_compat=False, context_mode="gather")
        differences = {key: 0.0 for key in ("lr", "weight_decay", "ema", "lambda")}
        for entry in schedule:
            trainer.step = entry["iteration"]
            values = trainer.set_hyperparameters()
            for key in differences:
                differences[key] = max(differences[key], abs(values[key] - entry[key]))
        for key, value in differences.items():
            row(f"{key} at each of the release's {len(schedule)} iterations (max abs)", f"{value:.1e}", "1e-12 relative")
        trainer.step = 0
        values = trainer.set_hyperparameters()
        ijepa = META["runs"]["ijepa"]
        row("I-JEPA's first LR and weight decay (max abs)",
            f"{max(abs(values['lr'] - ijepa['lr']), abs(values['weight_decay'] - ijepa['weight_decay'])):.1e}",
            "1e-12 relative")
    header = "| quantity | max difference against the authors' code | tolerance |\n|---|---|---|"
    return "\n".join([header, *rows])


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(report())
