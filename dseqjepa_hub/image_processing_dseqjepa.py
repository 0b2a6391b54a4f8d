"""DSeq-JEPA image processors on transformers 5's two backends (torchvision, the default, and PIL).

Both resize (to a fixed height x width, or the shorter side to `size["shortest_edge"]` followed by a
centre crop), convert any mode to RGB, rescale to [0, 1] and normalise with ImageNet statistics.
`crop_box` maps the model input back onto the original image, which is how region masks and boxes
are drawn at the original size.
"""

from __future__ import annotations

import dataclasses
import math

from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from .configuration_dseqjepa import DSeqJEPAConfig
from .errors import load_errors_as

MAX_SIDE = 8192  # the largest input side accepted: a model runs at a few hundred pixels a side
# Written into config.json by dseqjepa-hub before the config described the architecture only: folders
# saved then keep them there, and a processor built from such a config takes them.
LEGACY_CONFIG_STATISTICS = ("image_mean", "image_std")


class _DSeqJEPAProcessingDefaults:
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    model_input_names = ["pixel_values"]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validate_settings()

    def validate_settings(self) -> None:
        """Every setting of the right type and range (transformers reads preprocessor_config.json with no check
        of its own): sizes whole pixels in [1, MAX_SIDE], flags booleans, a PIL filter, and mean and std a finite
        number per channel, the std positive. ValueError naming the field."""
        for name in ("do_resize", "do_center_crop", "do_rescale", "do_normalize", "do_convert_rgb"):
            if not isinstance(getattr(self, name, None), (bool, type(None))):
                raise ValueError(f"{name}: expected true or false, found {getattr(self, name)!r}")
        for name, keys in (("size", (("height", "width"), ("shortest_edge",))), ("crop_size", (("height", "width"),))):
            value = getattr(self, name, None)
            if dataclasses.is_dataclass(value):  # transformers' SizeDict: the sides that are set
                value = {key: side for key, side in dataclasses.asdict(value).items() if side is not None}
            if not isinstance(value, dict) or not any(set(value) == set(k) for k in keys) or not all(
                type(side) is int and 1 <= side <= MAX_SIDE for side in value.values()
            ):
                wanted = " or ".join("{" + ", ".join(f'"{key}": N' for key in k) + "}" for k in keys)
                raise ValueError(f"{name}: expected {wanted} with whole numbers of pixels in [1, {MAX_SIDE}], "
                                 f"found {value!r}")
        for name in ("image_mean", "image_std"):
            values = getattr(self, name, None)
            values = list(values) if isinstance(values, (list, tuple)) else values
            channels = (3,) if self.do_convert_rgb else range(1, 5)  # converted to RGB, or as the images come
            if not isinstance(values, list) or len(values) not in channels or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
            ) or (name == "image_std" and min(values) <= 0):
                wanted = "positive" if name == "image_std" else "finite"
                raise ValueError(f"{name}: expected {'3' if self.do_convert_rgb else '1 to 4'} {wanted} numbers (one per "
                                 f"channel), found {values!r}")
        resample = getattr(self, "resample", None)
        if type(resample) is not int and not isinstance(resample, PILImageResampling) or resample not in {
            int(method) for method in PILImageResampling
        }:
            raise ValueError(f"resample: expected one of PIL's filters {sorted(int(m) for m in PILImageResampling)}, "
                             f"found {resample!r}")
        rescale = getattr(self, "rescale_factor", 1 / 255)
        if not isinstance(rescale, (int, float)) or isinstance(rescale, bool) or not 0 < rescale < math.inf:
            raise ValueError(f"rescale_factor: expected a finite number > 0, found {rescale!r}")

    def check_fits(self, config: DSeqJEPAConfig) -> None:
        """ValueError unless this processor gives inputs `config`'s model takes: its channels, and sides that are
        multiples of its patch (a resize to height x width or a centre crop; without either the image decides)."""
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if self.do_normalize and len(values) != config.num_channels:
                raise ValueError(f"{name} has {len(values)} values, config.json says {config.num_channels} channels")
        size = self.crop_size if self.do_center_crop else self.size
        sides = [size.get("height"), size.get("width")] if self.do_resize or self.do_center_crop else []
        if None not in sides and any(side % config.patch_size for side in sides):  # None: the image decides
            raise ValueError(f"gives {size} inputs, expected sides that are multiples of config.json's patch size "
                             f"{config.patch_size}")

    @classmethod
    def from_dict(cls, image_processor_dict: dict, **kwargs):
        """A saved processor, every setting checked: anything wrong raises ModelLoadError."""
        with load_errors_as(f"{cls.__name__} (preprocessor_config.json)"):
            return super().from_dict(image_processor_dict, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loading; an unreadable or invalid preprocessor_config.json raises ModelLoadError."""
        with load_errors_as(f"cannot load a {cls.__name__} from {pretrained_model_name_or_path}"):
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def from_model_config(cls, config: DSeqJEPAConfig, center_crop: bool = False, **kwargs):
        """A processor for `config`'s input size: a direct resize, or with `center_crop` the shorter side
        resized to 8/7 of the input size (256 for 224, the I-JEPA evaluation) then cropped. ImageNet
        statistics, or those an earlier version wrote into the config."""
        side = config.image_size
        for name in LEGACY_CONFIG_STATISTICS:
            if getattr(config, name, None) is not None:
                kwargs.setdefault(name, list(getattr(config, name)))
        if center_crop:
            kwargs.setdefault("size", {"shortest_edge": round(side * 8 / 7)})
            kwargs.setdefault("crop_size", {"height": side, "width": side})
            kwargs.setdefault("do_center_crop", True)
        else:
            kwargs.setdefault("size", {"height": side, "width": side})
        return cls(**kwargs)

    def crop_box(self, original_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), exclusive end, of the part of an (H, W) image that the model input shows."""
        height, width = original_size
        size = self.size
        if not self.do_resize:
            resized = (height, width)
        elif size.get("shortest_edge"):
            short = size["shortest_edge"]
            if height <= width:
                resized = (short, int(short * width / height))
            else:
                resized = (int(short * height / width), short)
        else:
            resized = (size["height"], size["width"])
        if not self.do_center_crop:
            return 0, 0, width, height
        crop_h, crop_w = self.crop_size["height"], self.crop_size["width"]
        # A crop larger than the image pads it with zeros: the box then reaches past the image's edges.
        top, left = self._crop_start(resized[0], crop_h), self._crop_start(resized[1], crop_w)
        scale_y, scale_x = height / resized[0], width / resized[1]
        return (
            round(left * scale_x),
            round(top * scale_y),
            round((left + crop_w) * scale_x),
            round((top + crop_h) * scale_y),
        )


class DSeqJEPAImageProcessor(_DSeqJEPAProcessingDefaults, TorchvisionBackend):
    r"""DSeq-JEPA image processor (torchvision backend). Direct resize to 224x224 by default."""

    @staticmethod
    def _crop_start(side: int, crop: int) -> int:
        """Where the centre crop starts along one side, as the torchvision backend crops and pads."""
        return (side - crop) // 2 if crop <= side else -((crop - side) // 2)


class DSeqJEPAImageProcessorPil(_DSeqJEPAProcessingDefaults, PilBackend):
    r"""DSeq-JEPA image processor (PIL backend), numerically close to the torchvision one."""

    @staticmethod
    def _crop_start(side: int, crop: int) -> int:
        """Where the centre crop starts along one side, as transformers' numpy `center_crop` crops and pads."""
        return (side - crop) // 2


__all__ = ["DSeqJEPAImageProcessor", "DSeqJEPAImageProcessorPil"]

if __name__.startswith("dseqjepa_hub."):  # the package's copy registers its classes (transformers registers a remote copy)
    from transformers import AutoImageProcessor, AutoVideoProcessor

    AutoImageProcessor.register(
        DSeqJEPAConfig,
        image_processor_classes={"torchvision": DSeqJEPAImageProcessor, "pil": DSeqJEPAImageProcessorPil},
        exist_ok=True,
    )
    # No video processor: said here, so that transformers' pipelines (which look for one) do not read the
    # image processor's `auto_map` as one and ask on the terminal whether to run the folder's code.
    AutoVideoProcessor.register(DSeqJEPAConfig, video_processor_classes={}, exist_ok=True)
    DSeqJEPAImageProcessor.register_for_auto_class("AutoImageProcessor")  # `auto_map` in saved processors
    DSeqJEPAImageProcessorPil.register_for_auto_class("AutoImageProcessor")
