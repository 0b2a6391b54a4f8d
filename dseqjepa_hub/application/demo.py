"""The browser demo: a Gradio app that ranks the regions of an uploaded image (`dseqjepa demo`).

Upload an image or pick an example, choose the number of regions and the minimum region fraction,
and see the ranked regions, the saliency heatmap and the DSeq prediction sequence side by side with
the region table. `analyze` is the app's function (also reachable as the API endpoint "/analyze",
e.g. through `gradio_client`): the uploaded file is decoded by the one decoder (`image_io.load_image`,
so a file that is not an image is its one-line reason, in the page and through the API) and goes through the one runner
(`runner.infer_images`) with the forward pass of the region jobs; `build_demo` makes the app; `launch` serves it.

Gradio is an optional extra (`pip install 'dseqjepa-hub[demo]'`) and is imported only here. Nothing
is fetched from the network: analytics are off and the theme uses the system's fonts, so the app
runs offline with the bundled model.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DSeqJEPAError
from ..image_io import ImageLoadError, load_image
from ..image_processing_dseqjepa import DSeqJEPAImageProcessor
from ..modeling_dseqjepa import DSeqJEPAModel
from .drawing import draw_regions, draw_saliency, draw_sequence
from .feature_maps import prediction_steps
from .loading import is_default_model, load_model
from .regions_job import batch_regions, ranked_regions_forward
from .runner import ImageBatch, infer_images

TABLE_HEADERS = ["rank", "region", "score", "area %", "box [x0, y0, x1, y1]"]
EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples" / "images"  # in a checkout; absent from a wheel
OFFLINE_ENVIRONMENT = {"GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TELEMETRY_ENABLED": "False"}
DEFAULT_PORT = 7860
OUTPUT_BUTTONS = ["download", "fullscreen"]  # not "share": it posts to the Hub
OUTPUT_IDS = ("regions-output", "saliency-output", "sequence-output")
# Gradio floats each output's label (top left) and buttons (top right) over the image: the pictures start
# below them, so that no title or colour-bar value is hidden (tests/test_demo.py checks it in Chromium).
CSS = ", ".join(f"#{name} .image-frame" for name in OUTPUT_IDS) + " { padding-top: 2.25rem; }"


class DemoError(DSeqJEPAError):
    """The demo cannot start: Gradio is missing, or the port is taken."""


def _gradio():
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    try:
        import gradio
    except ImportError as error:
        raise DemoError(f"the demo needs Gradio ({error}): pip install 'dseqjepa-hub[demo]'") from None
    return gradio


def analyze(
    model: DSeqJEPAModel,
    processor: DSeqJEPAImageProcessor,
    image: Image.Image | np.ndarray | str | os.PathLike | None,
    num_regions: int = 5,
    min_region_fraction: float = 0.15,
) -> tuple[Image.Image, Image.Image, Image.Image, list[list]]:
    """One image (or image file) -> (ranked regions overlay, saliency heatmap, prediction sequence strip, region
    table rows)."""
    if image is None:
        raise DemoError("upload an image or pick an example first")
    if isinstance(image, (str, os.PathLike)):
        try:
            image = load_image(image)
        except ImageLoadError as error:  # named by the upload's file name, not Gradio's cache path
            raise ImageLoadError(Path(error.path).name, error.reason) from None
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    forward = ranked_regions_forward(model, num_regions=int(num_regions), min_region_fraction=float(min_region_fraction))

    def pictures(batch: ImageBatch, ranked: dict[str, torch.Tensor]) -> list:
        box = processor.crop_box(original_size=batch.sizes[0])
        return [partial(_pictures, image, batch_regions(ranked, 0, batch.sizes[0], box), ranked["saliency"][0].numpy(), box)]

    [result] = infer_images([image], processor, forward, pictures, device=model.device, dtype=model.dtype)
    return result


def _pictures(image: Image.Image, regions: list[dict], saliency: np.ndarray, box) -> tuple:
    table = [
        [region["rank"], "background" if region["is_background"] else f"R{region['rank']}", round(region["score"], 4),
         round(100 * region["area_fraction"], 1), str(region["box"])]
        for region in regions
    ]
    return (
        draw_regions(image, regions, legend=False),  # the region table beside it is the legend
        draw_saliency(image, saliency, box),
        draw_sequence(image, prediction_steps(regions)),
        table,
    )


def example_images(folder: str | os.PathLike | None = None) -> list[str]:
    """The example photos offered under the input (the repository's examples/images by default)."""
    folder = Path(folder) if folder is not None else EXAMPLES_DIR
    if not folder.is_dir():
        return []
    return sorted(str(path) for path in folder.iterdir() if path.suffix.lower() in (".jpg", ".jpeg", ".png"))


def build_demo(
    model: str | None = None,
    *,
    device: str = "cpu",
    examples_dir: str | os.PathLike | None = None,
    title: str = "DSeq-JEPA: discriminative regions",
):
    """The Gradio app (`gradio.Blocks`) for `model` (folder, Hub id, or None or `default` for the bundled model)."""
    gr = _gradio()
    loaded = load_model(model, device)
    config = loaded.model.config
    name = "the bundled default model (not a useful feature extractor)" if is_default_model(model) else f"`{loaded.description}`"

    def run(image, num_regions, min_region_fraction):
        try:
            return analyze(loaded.model, loaded.processor, image, num_regions, min_region_fraction)
        except DSeqJEPAError as error:  # shown in the page, not as a traceback
            raise gr.Error(str(error)) from None

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {title}\n"
            "DSeq-JEPA ranks image regions by how discriminative they are (the similarity of each patch to the "
            f"learned CLS token) and learns to predict them in that order. Model: {name} "
            f"({config.image_size} px, patch {config.patch_size})."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = _paths_of_uploads(gr.Image(type="filepath", label="image", sources=["upload", "clipboard"],
                                                   elem_id="input-image"))
                num_regions = gr.Slider(2, 10, value=config.num_regions, step=1, label="regions (background included)")
                min_fraction = gr.Slider(0.0, 0.5, value=config.min_region_fraction, step=0.01,
                                         label="minimum region fraction", elem_id="min-fraction")
                button = gr.Button("Rank regions", variant="primary", elem_id="run-button")
                examples = example_images(examples_dir)
                if examples:
                    gr.Examples(examples=examples, inputs=image, label="examples")
            with gr.Column(scale=2):
                with gr.Row():
                    overlay = gr.Image(type="pil", label="ranked regions", elem_id="regions-output", format="png",
                                       buttons=OUTPUT_BUTTONS)
                    saliency = gr.Image(type="pil", label="saliency", elem_id="saliency-output", format="png",
                                        buttons=OUTPUT_BUTTONS)
                sequence = gr.Image(type="pil", label="prediction sequence", elem_id="sequence-output", format="png",
                                    buttons=OUTPUT_BUTTONS)
                table = gr.Dataframe(headers=TABLE_HEADERS, label="regions", elem_id="region-table", interactive=False)
        button.click(run, inputs=[image, num_regions, min_fraction], outputs=[overlay, saliency, sequence, table],
                     api_name="analyze")
    return demo


def _paths_of_uploads(image_input):
    """`image_input` (a gr.Image of type "filepath") hands an uploaded file's path to `analyze`, and so to the
    package's decoder, instead of opening it with PIL first: Gradio's own failure there reaches an API client
    as an AppError without its reason. Set on the instance: a gr.Image subclass would make Gradio write a
    .pyi stub beside this module."""
    preprocess = image_input.preprocess

    def path_of(payload):
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return payload.path
        return preprocess(payload)

    image_input.preprocess = path_of
    return image_input


def theme():
    """Gradio's default theme with the system's fonts: no font is fetched from the network."""
    gr = _gradio()
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )


def launch(demo, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, block: bool = True, quiet: bool = False):
    """Serve `demo`; returns (app, local URL, share URL) as `gradio.Blocks.launch` does."""
    try:
        return demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet,
                           share=False, theme=theme(), css=CSS, footer_links=["api"])
    except OSError as error:
        raise DemoError(f"cannot serve the demo on {host}:{port}: {error}") from None
