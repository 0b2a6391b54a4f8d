"""The values of the options the `dseqjepa` command offers, written once for the command line and the library.

A top-level module that imports nothing: the CLI (which must answer `--help` without torch) and the library
modules that implement these options (which import torch) both read them from here. It cannot live in
`dseqjepa_hub` (importing anything there runs its `__init__`: torch and transformers), nor in `dseqjepa_cli`
(the libraries would then depend on their front end), so it sits below both. The remote-code core files
(which travel to the Hub alone) do not import it: the CLI's `--max-pixels` default mirrors
`dseqjepa_hub.image_io.DEFAULT_MAX_PIXELS`, and tests/test_cli.py checks the two agree. Where the library
implements an option as a table (`dseqjepa_convert.READERS`, the exporters, the data-set builders), the
names here are checked against the table by the same test.
"""

CONVERT_FORMATS = ("dseq-release", "hf-ijepa", "ijepa-release", "timm", "training")  # dseqjepa_convert.READERS
CONVERT_ENCODERS = ("target", "context")  # which encoder of a training checkpoint
CONVERSION_TOLERANCE = 1e-4  # fp32 max abs difference of the final-norm tokens, converted vs source
EXPORT_TARGETS = ("timm", "onnx")  # dseqjepa_convert.export_*
ONNX_TOLERANCE = 1e-4  # fp32 max abs difference per output, ONNX Runtime vs torch
EMBED_POOLS = ("mean", "cls", "tokens")
EVAL_TASKS = ("linear", "knn", "regions")
EVAL_LAYERS = ("last", "last4")
QUANTIZATIONS = ("int8",)  # dseqjepa_hub.application.loading.quantize_model
VISUALIZE_KINDS = ("regions", "saliency", "attention", "similarity", "clusters", "sequence", "pca")
CLUSTER_METHODS = ("kmeans", "spectral")
OVERLAY_FORMATS = ("jpg", "png", "webp")  # regions_job.OVERLAY_SAVE_OPTIONS; the first is the default
DRAWING_MAX_SIDE = 2048  # regions and visualize decode larger photos at this many pixels a side
DEFAULT_MAX_PIXELS = 250_000_000  # = dseqjepa_hub.image_io.DEFAULT_MAX_PIXELS (remote code: not imported there)
DEVICES = ("cpu", "cuda")
DEFAULT_MODEL = "default"  # = dseqjepa_hub.application.loading.DEFAULT_MODEL: the bundled model, wherever a model is named

# Ranges of the numeric options (checked when the arguments are parsed, before anything loads; each shown in --help).
BATCH_SIZES = (1, 4096)
MAX_PIXELS = (1, 10_000_000_000)
INPUT_SIZES = (1, 8192)  # = dseqjepa_hub.image_processing_dseqjepa.MAX_SIDE; the model's patch size is checked at load
MAX_SIDES = (1, 65_535)
WORKERS = (0, 256)
NUM_REGIONS = (1, 1024)  # = dseqjepa_hub.regions.MAX_REGIONS
CLUSTERS = (1, 1024)
LAYERS = (-1024, 1023)
SEEDS = (0, 2**32 - 1)
OPSETS = (18, 23)
