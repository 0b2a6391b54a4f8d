"""The "saliency-ranking" pipeline: ranked discriminative regions of images.

Remote code: this file travels inside saved model folders (see `save_pretrained_with_pipeline`)
so that `pipeline("saliency-ranking", model=repo_or_folder, trust_remote_code=True)` runs from
the folder alone. It imports only torch / transformers / numpy / PIL and its sibling core files.

transformers' own image pipelines ("image-feature-extraction", "image-classification") get the same
door for DSeq-JEPA models (`PackageDecoding`): files decoded by the package's decoder with its pixel
limit, non-finite outputs refused; for every other model they are transformers' unchanged.
"""

from __future__ import annotations

import os

import huggingface_hub
import numpy as np
import torch
from PIL import Image, ImageOps
from transformers import AutoModel, Pipeline
from transformers.image_utils import load_image as load_image_url
from transformers.pipelines import PIPELINE_REGISTRY, ImageClassificationPipeline, ImageFeatureExtractionPipeline

from .errors import DSeqJEPAError, ModelLoadError, NonFiniteOutputError
from .image_io import ImageLoadError, load_image, to_rgb, to_uint8
from .modeling_dseqjepa import PIPELINE_TASK as TASK
from .regions import rank_regions, region_dicts


def is_dseqjepa(model) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "dseqjepa"


def check_processor(pipeline) -> None:
    """ModelLoadError unless the pipeline's image processor gives inputs its DSeq-JEPA model takes (as the
    loader checks a folder): found when the pipeline is made, not by a failing forward."""
    check_fits = getattr(pipeline.image_processor, "check_fits", None)
    if check_fits is not None:
        try:
            check_fits(pipeline.model.config)
        except ValueError as error:
            raise ModelLoadError(f"{pipeline.model.name_or_path}: preprocessor_config.json {error}") from error


def refuse_non_finite(outputs, model) -> None:
    """NonFiniteOutputError when any float output is NaN or infinite (NaN or inf weights, a zero or NaN
    `image_std`): a pipeline never returns such numbers as a result."""
    values = outputs.values() if isinstance(outputs, dict) else outputs
    if any(isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(v.isfinite().all()) for v in values):
        raise NonFiniteOutputError(f"the model {getattr(model, 'name_or_path', '')!s} gives non-finite outputs: its "
                                   "weights or preprocessor_config.json hold NaN, inf or a zero image_std")


class PackageDecoding:
    """A transformers image pipeline that, for DSeq-JEPA models, checks its image processor against the model,
    decodes its inputs with the package's decoder (`_to_pil`: files through `image_io.load_image`, its pixel
    limit and `ImageLoadError`) and refuses non-finite outputs; other models are served exactly as before."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if is_dseqjepa(self.model):
            check_processor(self)

    def preprocess(self, image, *args, timeout=None, **kwargs):
        if is_dseqjepa(self.model):
            image = _to_pil(image, timeout)
        return super().preprocess(image, *args, timeout=timeout, **kwargs)

    def _forward(self, model_inputs, *args, **kwargs):
        outputs = super()._forward(model_inputs, *args, **kwargs)
        if is_dseqjepa(self.model):
            refuse_non_finite(outputs, self.model)
        return outputs


PACKAGE_DECODED_PIPELINES = {  # transformers' task -> its class served through `PackageDecoding`
    "image-feature-extraction": type("PackageDecodedImageFeatureExtractionPipeline",
                                     (PackageDecoding, ImageFeatureExtractionPipeline), {"__module__": __name__}),
    "image-classification": type("PackageDecodedImageClassificationPipeline",
                                 (PackageDecoding, ImageClassificationPipeline), {"__module__": __name__}),
}


class SaliencyRankingPipeline(Pipeline):
    """Rank the discriminative regions of images with a DSeq-JEPA model (docs/METHOD.md of dseqjepa-hub,
    sections 1-2).

    Inputs: a path, a PIL image, a numpy array (H, W), (H, W, 3) or (H, W, 4), uint8 or float in
    [0, 1], or a list of them. Parameters (defaults from the model config where they exist):
    `min_region_fraction`, `num_regions` (background slot included), `include_background`
    (True), `return_embeddings` (False: add each region's `embedding` (D,)), `return_saliency`
    (False: add the image's `saliency` map (h, w) to each region dict, the same array).
    Returns one list of region dicts per image (docs/ARCHITECTURE.md), ranked, background last.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False
    # transformers would otherwise look for a video processor and, reading the image
    # processor's auto_map as one, ask on the terminal whether to run remote code.
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not is_dseqjepa(self.model):
            raise ModelLoadError(f"the saliency-ranking pipeline needs a DSeq-JEPA model (model_type 'dseqjepa'), found "
                                 f"a {type(self.model).__name__} of model_type "
                                 f"{getattr(self.model.config, 'model_type', None)!r}")
        check_processor(self)

    def _sanitize_parameters(
        self,
        min_region_fraction=None,
        num_regions=None,
        include_background=None,
        return_embeddings=None,
        return_saliency=None,
        timeout=None,
    ):
        preprocess_params = {} if timeout is None else {"timeout": timeout}
        forward_params = {}
        if min_region_fraction is not None:
            forward_params["min_region_fraction"] = float(min_region_fraction)
        if num_regions is not None:
            forward_params["num_regions"] = int(num_regions)
        postprocess_params = {}
        for name, value in (
            ("include_background", include_background),
            ("return_embeddings", return_embeddings),
            ("return_saliency", return_saliency),
        ):
            if value is not None:
                postprocess_params[name] = bool(value)
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, image, timeout=None):
        image = _to_pil(image, timeout)
        pixel_values = self.image_processor(image, return_tensors="pt")["pixel_values"].to(self.dtype)
        # (1, 2) so that the pipeline's collation concatenates it like the pixels.
        return {"pixel_values": pixel_values, "original_size": torch.tensor([[image.height, image.width]])}

    def _forward(self, model_inputs, min_region_fraction=None, num_regions=None):
        ranked = rank_regions(
            self.model,
            model_inputs["pixel_values"],
            min_region_fraction=min_region_fraction,
            num_regions=num_regions,
        )
        refuse_non_finite(ranked, self.model)
        return {**ranked, "original_size": model_inputs["original_size"]}

    def postprocess(self, model_outputs, include_background=True, return_embeddings=False, return_saliency=False):
        height, width = (int(v) for v in model_outputs["original_size"][0])
        regions = region_dicts(
            masks=model_outputs["masks"][0],
            scores=model_outputs["scores"][0],
            valid=model_outputs["valid"][0],
            original_size=(height, width),
            crop_box=_crop_box(self.image_processor, (height, width)),
            embeddings=model_outputs["region_embeddings"][0] if return_embeddings else None,
        )
        if not include_background:
            regions = [region for region in regions if not region["is_background"]]
        if return_saliency:
            saliency = model_outputs["saliency"][0].float().numpy()  # (h, w)
            for region in regions:
                region["saliency"] = saliency
        return regions


def _crop_box(image_processor, original_size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The part of the image the model saw; None (all of it) for processors without `crop_box`."""
    crop_box = getattr(image_processor, "crop_box", None)
    return None if crop_box is None else crop_box(original_size=original_size)


def _to_pil(image, timeout=None) -> Image.Image:
    """A path, URL, PIL image or numpy array -> upright RGB PIL image.

    A file goes through the package's safe loader (`image_io.load_image`: 16-bit and float images
    scaled, transparency over white, a pixel limit, errors naming the file), so a path gives the
    same pixels here as in `dseqjepa regions`; only URLs go through transformers' loader.
    """
    if isinstance(image, os.PathLike) or (isinstance(image, str) and not image.startswith(("http://", "https://"))):
        return load_image(image)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(_array_to_uint8(image))
    elif isinstance(image, str):
        image = _download(image, timeout)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"expected a path, URL, PIL image or numpy array, found {type(image).__name__}")
    try:
        return to_rgb(ImageOps.exif_transpose(image))  # a lazily opened image decodes here
    except Exception as error:  # noqa: BLE001 -- the decoding boundary, as in image_io.load_image
        raise ImageLoadError(getattr(image, "filename", None) or "<PIL image>",
                             f"truncated or corrupt image data ({type(error).__name__}: {error})") from error


def _download(url: str, timeout: float | None) -> Image.Image:
    """transformers' URL loader; offline (HF_HUB_OFFLINE) or failing, one line that names the URL."""
    if huggingface_hub.is_offline_mode():
        raise DSeqJEPAError(f"{url}: a URL, and the Hub is offline (HF_HUB_OFFLINE): pass the image's path instead")
    try:
        return load_image_url(url, timeout=timeout)
    except Exception as error:  # noqa: BLE001 -- the HTTP client's errors (its class varies by version) or PIL's
        raise DSeqJEPAError(f"{url}: could not be downloaded as an image ({type(error).__name__}: {error})") from None


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)):
        raise ValueError(
            f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4) (channels last), found {array.shape}"
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.dtype == np.uint8 or (
        np.issubdtype(array.dtype, np.floating) and array.size and 0.0 <= array.min() and array.max() <= 1.0
    ):
        return to_uint8(array)
    raise ValueError(f"expected a uint8 image array or a float one in [0, 1], found dtype {array.dtype}")


def register_saliency_ranking_pipeline() -> None:
    """Make `pipeline("saliency-ranking", ...)` known in this process, and transformers' image pipelines decode
    through the package for DSeq-JEPA models (done on `import dseqjepa_hub`)."""
    registered = PIPELINE_REGISTRY.supported_tasks.get(TASK)
    if registered is None or registered["impl"] is not SaliencyRankingPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=SaliencyRankingPipeline, pt_model=AutoModel, type="image"
        )
    for task, pipeline_class in PACKAGE_DECODED_PIPELINES.items():  # transformers' own entries, their class swapped
        PIPELINE_REGISTRY.supported_tasks[task]["impl"] = pipeline_class


def save_pretrained_with_pipeline(model, image_processor, save_directory: str | os.PathLike) -> None:
    """The model and its image processor in one folder. Every `save_pretrained` of a DSeq-JEPA model
    ships the pipeline (`DSeqJEPAPreTrainedModel.save_pretrained`); this saves both halves at once."""
    model.save_pretrained(save_directory)
    image_processor.save_pretrained(save_directory)


if __name__.startswith("dseqjepa_hub."):  # the package's copy (not a remote-code copy) registers the task
    register_saliency_ranking_pipeline()
