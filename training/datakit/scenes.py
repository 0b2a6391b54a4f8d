"""The "scenes" data set: real photo cut-outs composited onto crops of real photographs.

Sources (Debian packages, see `sources.py`):
- objects: the photographic stamps of `tuxpaint-stamps-default` (PNG with alpha), category = folder;
- backgrounds: a fixed list of photographs from `plasma-workspace-wallpapers`,
  `mate-backgrounds` and `opencv-doc` (`BACKGROUND_PHOTOS`).

Telling photo stamps from drawn ones (checked by eye on the 2022.06.04 package: 286 of 796
PNG stamps pass, nearly all photos):
1. no folder on the stamp's path is one of `DRAWN_FOLDERS` (cartoons, letters, symbols, signs...);
2. no `.svg` twin (Tux Paint prefers the SVG; such a PNG is a rendering of a drawing);
3. its `.dat` does not mark it `colorable` or `tintable` (shapes Tux Paint recolours);
4. RGBA, longest side >= 64 px;
5. colour richness: the opaque pixels hold >= 1000 distinct colours and >= 0.25 distinct colours
   per opaque pixel (flat-shaded drawings have a few hundred colours).
Categories are stamp folders; a folder with fewer than `MIN_STAMPS_PER_CATEGORY` photo stamps
is merged into its parent folder (deepest first); a category left with a single stamp group is
dropped, since it could not appear in both splits. A stamp and its `_mirror` twin form one group.

Split: per category, 20% of the stamp groups (at least one) go to validation; 20% of the
background photos (at least one) go to validation; nothing is shared between the splits.

Each image (deterministic from (seed, split, index), so a build can resume anywhere):
a square crop (35-100% of the photo's short side, random position, random mirror) of a
background resized to `image_size`, then n = 1 to 4 stamps of the split, each scaled so that its
opaque pixels cover 10-40% of the image (times n ** -0.5; at most the whole width or height),
randomly mirrored (unless the stamp's `.dat` says `nomirror`) and placed at a random position,
up to a quarter of its width / height past the frame (objects placed fully inside would crowd
the centre and favour a centred-box prior); a placement is redrawn (up to 10 times) when less
than half of the cut-out would be in the frame or it would hide more than half of an earlier
object. Ground truth is the visible part of each object (alpha >= 128, later objects on top).

Layout of a built set:
  build.json, LICENSES.md, licenses/<package>.copyright
  <split>/images/000000.jpg      composites (split = train | val)
  <split>/masks/000000.png       label image: 0 = background, k = the k-th object of the image
  <split>/annotations.json       {"categories": [...], "images": [{"file", "mask", "background",
                                  "objects": [{"id", "category", "stamp", "box", "area", "mirrored"}]}]}
  <split>/labels.tsv             "images/000000.jpg<TAB>category of the largest visible object"
Pretraining reads `<split>/images`; `dseqjepa eval` reads the annotations and labels.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dseqjepa_hub.application.atomic import atomic_write_text

from . import build_dir
from .sources import DataKitError, ensure_packages, write_licences

STAMP_ROOT = "usr/share/tuxpaint/stamps"
DRAWN_FOLDERS = frozenset({"symbols", "cartoon", "toys", "plastic", "roadsigns", "flags", "easter"})
MIN_STAMPS_PER_CATEGORY = 4
MIN_DISTINCT_COLOURS = 1000
MIN_DISTINCT_COLOUR_RATIO = 0.25
MIN_STAMP_SIDE = 64

# Photographs without a dominant object of their own (drawings, renders, logos, chessboards,
# stereo twins and photos of single objects left out). A folder means its largest JPEG.
BACKGROUND_PHOTOS = (
    *(
        ("plasma-workspace-wallpapers", f"usr/share/wallpapers/{name}/contents/images")
        for name in (
            "Autumn", "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
            "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
        )
    ),
    *(
        ("mate-backgrounds", f"usr/share/backgrounds/mate/nature/{name}.jpg")
        for name in ("Aqua", "Blinds", "Dune", "Garden", "GreenMeadow", "RainDrops", "Storm", "TwoWings", "Wood")
    ),
    *(
        ("opencv-doc", f"usr/share/doc/opencv-doc/examples/{name}")
        for name in (
            "data/aero1.jpg", "data/aero3.jpg", "data/aloeL.jpg", "data/board.jpg", "data/building.jpg",
            "data/ela_original.jpg", "data/home.jpg", "data/left.jpg", "data/leuvenA.jpg", "hfs/data/001.jpg",
            "text/scenetext01.jpg", "text/scenetext02.jpg", "text/scenetext03.jpg", "text/scenetext04.jpg",
            "text/scenetext05.jpg", "text/scenetext06.jpg",
        )
    ),
)
PACKAGES_USED = ("tuxpaint-stamps-default", "plasma-workspace-wallpapers", "mate-backgrounds", "opencv-doc")
SPLITS = ("train", "val")
VAL_FRACTION = 0.2
MAX_OBJECTS = 4
PLACEMENT_TRIES = 10
MIN_VISIBLE_FRACTION = 0.5
OUT_OF_FRAME = 0.25  # a cut-out may extend this fraction of its width / height past the frame
BACKGROUND_CACHE_SIDE = 4  # backgrounds are kept with a short side of at most 4 x image_size


@dataclass(frozen=True)
class Stamp:
    path: str  # relative to the source root
    category: str
    group: str  # stamp and its _mirror twin share a group
    mirrorable: bool


def _stamp_flags(png: Path) -> list[str]:
    dat = png.with_suffix(".dat")
    return dat.read_text(encoding="utf-8", errors="replace").split() if dat.is_file() else []


def is_photo_stamp(png: Path, stamp_root: Path) -> bool:
    """Rules 1-5 of the module docstring."""
    if DRAWN_FOLDERS.intersection(png.relative_to(stamp_root).parts[:-1]):
        return False
    if png.with_suffix(".svg").exists():
        return False
    if {"colorable", "tintable"}.intersection(_stamp_flags(png)):
        return False
    with Image.open(png) as image:
        if image.mode != "RGBA" or max(image.size) < MIN_STAMP_SIDE:
            return False
        rgba = np.asarray(image)
    opaque = rgba[..., 3] >= 128
    if not opaque.any():
        return False
    colours = rgba[opaque][:, :3].astype(np.int32)
    distinct = len(np.unique((colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]))
    return distinct >= MIN_DISTINCT_COLOURS and distinct / int(opaque.sum()) >= MIN_DISTINCT_COLOUR_RATIO


def find_photo_stamps(root: Path) -> list[Stamp]:
    """The photographic stamps under `root`, with their merged categories (sorted by path)."""
    stamp_root = root / STAMP_ROOT
    photos = [png for png in sorted(stamp_root.rglob("*.png")) if is_photo_stamp(png, stamp_root)]
    folder_of = {png: png.parent.relative_to(stamp_root).as_posix() for png in photos}
    counts = Counter(folder_of.values())
    for folder in sorted(counts, key=lambda name: (-name.count("/"), name)):
        if counts[folder] < MIN_STAMPS_PER_CATEGORY and "/" in folder:
            parent = folder.rsplit("/", 1)[0]
            for png, current in folder_of.items():
                if current == folder:
                    folder_of[png] = parent
            counts[parent] += counts.pop(folder)
    stamps = [
        Stamp(
            path=png.relative_to(root).as_posix(),
            category=folder_of[png],
            group=f"{folder_of[png]}/{png.stem.removesuffix('_mirror')}",
            mirrorable="nomirror" not in _stamp_flags(png),
        )
        for png in photos
    ]
    groups_per_category = defaultdict(set)
    for stamp in stamps:
        groups_per_category[stamp.category].add(stamp.group)
    return [stamp for stamp in stamps if len(groups_per_category[stamp.category]) >= 2]


def find_backgrounds(root: Path) -> list[tuple[str, str]]:
    """(package, file relative to root) for each listed background photo that is present."""
    found = []
    for package, relative in BACKGROUND_PHOTOS:
        path = root / relative
        if path.is_dir():
            # The other sizes are symlinks to the one real file.
            jpegs = sorted((p for p in path.glob("*.jpg") if not p.is_symlink()), key=lambda p: (-p.stat().st_size, p.name))
            path = jpegs[0] if jpegs else None
        if path is not None and path.is_file():
            found.append((package, path.relative_to(root).as_posix()))
    return found


def split_sources(stamps: list[Stamp], backgrounds: list[tuple[str, str]], seed: int) -> dict:
    """Disjoint train/val lists of stamp paths and background paths."""
    rng = np.random.default_rng([seed, 1000])
    groups_per_category = defaultdict(list)
    for stamp in stamps:
        if stamp.group not in groups_per_category[stamp.category]:
            groups_per_category[stamp.category].append(stamp.group)
    val_groups = set()
    for category in sorted(groups_per_category):
        groups = groups_per_category[category]
        order = rng.permutation(len(groups))
        val_groups.update(groups[i] for i in order[: max(1, round(VAL_FRACTION * len(groups)))])
    if len(backgrounds) < 2:
        raise DataKitError(f"found {len(backgrounds)} background photos; need at least 2 (one per split)")
    order = rng.permutation(len(backgrounds))
    num_val = max(1, round(VAL_FRACTION * len(backgrounds)))
    val_backgrounds = {backgrounds[i][1] for i in order[:num_val]}
    return {
        split: {
            "stamps": [s.path for s in stamps if (s.group in val_groups) == (split == "val")],
            "backgrounds": [path for _, path in backgrounds if (path in val_backgrounds) == (split == "val")],
        }
        for split in SPLITS
    }


def _load_background(path: Path, image_size: int) -> Image.Image:
    cache_side = BACKGROUND_CACHE_SIDE * image_size
    with Image.open(path) as image:
        image.draft("RGB", (cache_side, cache_side))  # JPEG: decode at a reduced scale
        image = image.convert("RGB")
    scale = cache_side / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    return image


def compose_scene(
    rng: np.random.Generator,
    image_size: int,
    backgrounds: list[Image.Image],
    stamps: list[Image.Image],
    mirrorable: list[bool],
) -> tuple[Image.Image, np.ndarray, int, list[dict]]:
    """One composite; returns (RGB image, label map (S, S) uint8, background index, objects)."""
    size = image_size
    background_index = int(rng.integers(len(backgrounds)))
    background = backgrounds[background_index]
    side = rng.uniform(0.35, 1.0) * min(background.size)
    x0 = rng.uniform(0, background.width - side)
    y0 = rng.uniform(0, background.height - side)
    canvas = background.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
    if rng.random() < 0.5:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    canvas = canvas.convert("RGBA")

    label = np.zeros((size, size), dtype=np.uint8)
    full_areas: list[int] = []
    objects: list[dict] = []
    num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(num_objects):
        stamp_index = int(rng.integers(len(stamps)))
        stamp = stamps[stamp_index]
        opaque_pixels = int((np.asarray(stamp)[..., 3] >= 128).sum())
        target_area = rng.uniform(0.1, 0.4) * num_objects**-0.5 * size * size
        scale = min((target_area / max(opaque_pixels, 1)) ** 0.5, size / max(stamp.size))
        width, height = max(1, round(stamp.width * scale)), max(1, round(stamp.height * scale))
        # Premultiplied alpha while resampling, so transparent pixels' colours do not bleed in.
        cutout = stamp.convert("RGBa").resize((width, height), Image.Resampling.LANCZOS).convert("RGBA")
        mirrored = bool(mirrorable[stamp_index] and rng.random() < 0.5)
        if mirrored:
            cutout = cutout.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        solid = np.asarray(cutout)[..., 3] >= 128  # (height, width)
        if solid.sum() == 0:
            continue
        object_id = len(objects) + 1
        margin_x, margin_y = int(OUT_OF_FRAME * width), int(OUT_OF_FRAME * height)
        for _ in range(PLACEMENT_TRIES):
            x = int(rng.integers(-margin_x, size - width + margin_x + 1))
            y = int(rng.integers(-margin_y, size - height + margin_y + 1))
            left, top = max(0, -x), max(0, -y)  # the part of the cut-out inside the frame
            right, bottom = min(width, size - x), min(height, size - y)
            in_frame = solid[top:bottom, left:right]
            if in_frame.sum() < MIN_VISIBLE_FRACTION * solid.sum():
                continue
            trial = label.copy()
            trial[y + top : y + bottom, x + left : x + right][in_frame] = object_id
            visible = np.bincount(trial.ravel(), minlength=object_id + 1)
            if all(visible[j + 1] >= MIN_VISIBLE_FRACTION * area for j, area in enumerate(full_areas)):
                break
        else:
            continue
        label = trial
        canvas.alpha_composite(cutout, dest=(x + left, y + top), source=(left, top, right, bottom))
        full_areas.append(int(in_frame.sum()))
        objects.append({"id": object_id, "stamp_index": stamp_index, "mirrored": mirrored})
    if not objects:
        raise DataKitError("could not place any object in a scene; the stamps are too thin for this image size")
    for record in objects:
        ys, xs = np.nonzero(label == record["id"])
        record["box"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        record["area"] = int(len(xs))
    return canvas.convert("RGB"), label, background_index, objects


def _image_seed(seed: int, split: str, index: int) -> list[int]:
    return [seed, SPLITS.index(split), index]


def build_scenes(
    out: str | Path,
    seed: int = 0,
    num_train: int = 4000,
    num_val: int = 500,
    image_size: int = 128,
    source_root: str | Path = "/",
    jpeg_quality: int = 95,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build the scenes data set into `out` (see the module docstring); a progress bar per split with
    `progress`. Returns `out`."""
    if image_size < 32:
        raise DataKitError(f"--image-size must be at least 32, got {image_size}")
    if num_train < 1 or num_val < 1:
        raise DataKitError(f"--num-train and --num-val must be positive, got {num_train} and {num_val}")
    out = Path(out)
    root = ensure_packages(list(PACKAGES_USED), source_root)
    stamps = find_photo_stamps(root)
    backgrounds = find_backgrounds(root)
    if not stamps:
        raise DataKitError(f"no photographic stamps found under {root / STAMP_ROOT}")
    sources = split_sources(stamps, backgrounds, seed)
    for split in SPLITS:
        if not sources[split]["stamps"]:
            raise DataKitError(f"no stamps left for the {split} split; need at least two stamp groups in a category")
    categories = sorted({stamp.category for stamp in stamps})
    parameters = {
        "dataset": "scenes",
        "format_version": 1,
        "seed": seed,
        "image_size": image_size,
        "num_images": {"train": num_train, "val": num_val},
        "jpeg_quality": jpeg_quality,
        "categories": categories,
        "sources": sources,
    }
    with build_dir.building(out, parameters, force) as work:
        stamp_by_path = {stamp.path: stamp for stamp in stamps}
        for split, count in (("train", num_train), ("val", num_val)):
            _build_split(
                work / split, split, count, seed, image_size, jpeg_quality, root, sources[split], stamp_by_path, categories,
                progress,
            )
        package_of = {path: package for package, path in backgrounds}
        used = Counter(package_of[path] for split in SPLITS for path in sources[split]["backgrounds"])
        used["tuxpaint-stamps-default"] = sum(len(sources[split]["stamps"]) for split in SPLITS)
        write_licences(work, dict(used), root, "the scenes data set")
    print(f"wrote {num_train} train and {num_val} val scenes ({len(categories)} categories) to {out}", flush=True)
    return out


def _build_split(
    folder: Path,
    split: str,
    count: int,
    seed: int,
    image_size: int,
    jpeg_quality: int,
    root: Path,
    sources: dict,
    stamp_by_path: dict[str, Stamp],
    categories: list[str],
    progress: bool,
) -> None:
    if (folder / "annotations.json").exists():  # finished in an earlier, interrupted run
        return
    progress_dir = folder / ".progress"  # one finished record per image; removed when the split is done
    for sub in ("images", "masks", ".progress"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(count) if not (progress_dir / f"{i:06d}.json").exists()]
    if todo:
        background_images = [_load_background(root / path, image_size) for path in sources["backgrounds"]]
        stamp_images = []
        for path in sources["stamps"]:
            with Image.open(root / path) as image:
                stamp_images.append(image.convert("RGBA"))
        mirrorable = [stamp_by_path[path].mirrorable for path in sources["stamps"]]
        for index in tqdm(todo, desc=f"scenes/{split}", unit="img", disable=not progress):
            rng = np.random.default_rng(_image_seed(seed, split, index))
            image, label, background_index, objects = compose_scene(
                rng, image_size, background_images, stamp_images, mirrorable
            )
            name = f"{index:06d}"
            build_dir.save_image(image, folder / "images" / f"{name}.jpg", quality=jpeg_quality)
            build_dir.save_image(Image.fromarray(label, mode="L"), folder / "masks" / f"{name}.png")
            record = {
                "file": f"images/{name}.jpg",
                "mask": f"masks/{name}.png",
                "background": sources["backgrounds"][background_index],
                "objects": [
                    {
                        "id": obj["id"],
                        "category": stamp_by_path[sources["stamps"][obj["stamp_index"]]].category,
                        "stamp": sources["stamps"][obj["stamp_index"]],
                        "box": obj["box"],
                        "area": obj["area"],
                        "mirrored": obj["mirrored"],
                    }
                    for obj in objects
                ],
            }
            build_dir.write_json(progress_dir / f"{name}.json", record)
    records = [json.loads((progress_dir / f"{i:06d}.json").read_text(encoding="utf-8")) for i in range(count)]
    lines = [f"{r['file']}\t{max(r['objects'], key=lambda o: o['area'])['category']}\n" for r in records]
    atomic_write_text(folder / "labels.tsv", "".join(lines))
    build_dir.write_json(folder / "annotations.json", {"categories": categories, "images": records})
    shutil.rmtree(progress_dir)
