"""DSeq-JEPA image processors on transformers 5's two backends (torchvision, the default, and PIL).

Both resize (to a fixed height x width, or the shorter side to `size["shortest_edge"]` followed by a
centre crop), convert any mode to RGB, rescale to [0, 1] and normalise with ImageNet statistics.
`crop_box` maps the model input back onto the original image, which is how region masks and boxes
are drawn at the original size.
"""

from __future__ import annotations

from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from .configuration_dseqjepa import DSeqJEPAConfig

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
