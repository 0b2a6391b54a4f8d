"""The one batched-inference runner: image files (or in-memory images) -> the caller's forward
pass on whole batches -> the caller's sink, at the model's pace. `regions_job`, `embed_job`,
`visualize_job`, the demo and the evaluation features all run through `infer_files` (or
`infer_images`), each with its own forward and sink.

- `image_batches(paths, processor, ...)` yields `ImageBatch`es in input order. Each worker opens
  files with the package's safe loader (`image_io.load_image`: the same pixels, limits and
  reasons as everywhere else) and preprocesses them one at a time, exactly as the
  saliency-ranking pipeline does, so the CLI and the pipeline see the same model input. A file
  that cannot be read becomes a (path, reason) failure of its batch, never an exception.
  Workers send back only tensors and plain data: pixel values, sizes, paths, and with
  `keep_images` the decoded image as a uint8 (H, W, 3) tensor (through shared memory), which
  `decoded_image` makes a PIL image again in the writer thread; `num_workers=0` does all of it in
  the calling process, which keeps the decoded PIL image itself (no copy).
- `infer_files` runs `forward(pixel_values)` (pinned, on the model's device) on each batch and
  hands its outputs, copied to the host one batch late (`HostCopy`: batch k is copied after
  batch k+1 is queued, so an accelerator never idles), to `sink(batch, outputs)`. The sink
  either consumes the batch itself (returns None) or returns one write job per image, which
  `BackgroundWriter` runs on a few threads; unreadable files come back as (path, reason)
  failures, the same for every job.
- `BackgroundWriter` runs write jobs (drawing, PNG encoding, atomic writes) on a few threads, so
  that the model is fed while outputs are encoded (Pillow and zlib release the GIL); results
  come back in submission order and the first error is raised in the caller.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from ..errors import NonFiniteOutputError
from ..image_io import DEFAULT_MAX_PIXELS, ImageLoadError, load_image
from .hf_datasets import ImageRows

logger = logging.getLogger(__name__)

MAX_DEFAULT_WORKERS = 4


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_num_workers(device: torch.device | str = "cpu", processes: int = 1) -> int:
    """Decoding processes for one of `processes` ranks sharing this machine's cores.

    With an accelerator the model needs almost no CPU: min(4, cores - 1). On the CPU the model
    needs the cores itself and a forward pass usually outweighs decoding: min(4, cores // 4), so 0
    (decode in the calling process) below 4 cores (benchmarks/RESULTS.md: on 2 cores a worker
    slows `embed` down by a quarter)."""
    share = available_cores() // max(processes, 1)
    if torch.device(device).type == "cpu":
        return min(MAX_DEFAULT_WORKERS, share // 4)
    return 0 if share <= 1 else min(MAX_DEFAULT_WORKERS, share - 1)


def default_write_threads() -> int:
    """Threads that draw, encode and write outputs: one per core, at least 2 (the calling thread
    mostly waits for the model and the workers), at most 8."""
    return max(2, min(8, available_cores()))


@dataclass
class ImageBatch:
    """A batch of consecutive input files, as the workers send it.

    indices, paths, sizes ((H, W) as decoded, what masks and overlays are drawn at),
    original_sizes ((H, W) on disk, as displayed) and, with `keep_images`, images (as decoded: RGB
    PIL images, or uint8 (H, W, 3) tensors from a worker process; `decoded_image` gives the PIL image)
    describe the readable files, in input order; pixel_values (B, 3, h, w) is their
    model input (None when none was readable). failures: (path, reason) for the others.
    """

    indices: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    original_sizes: list[tuple[int, int]] = field(default_factory=list)
    images: list[Image.Image | torch.Tensor] | None = None
    pixel_values: torch.Tensor | None = None
    failures: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indices) + len(self.failures)

    def pin_memory(self) -> ImageBatch:  # called by the DataLoader's pinning thread (CUDA)
        if self.pixel_values is not None:
            self.pixel_values = self.pixel_values.pin_memory()
        return self


class ImageFiles(Dataset):
    """Image files (or a data set's `ImageRows`, named SOURCE#ROW) -> one dict per image: decoded,
    preprocessed, or the reason it could not be read."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike] | ImageRows,
        processor,
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_side: int | None = None,
        keep_images: bool = False,
    ):
        self.paths = paths if isinstance(paths, ImageRows) else [Path(path) for path in paths]
        self.processor = processor
        self.max_pixels = max_pixels
        self.max_side = max_side
        self.keep_images = keep_images

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        if isinstance(self.paths, ImageRows):
            return self.item(index, self.paths.name(index), lambda: self.paths.load(index, **self.limits()))
        return self.item(index, self.paths[index], lambda: load_image(self.paths[index], **self.limits()))

    def limits(self) -> dict:
        return {"max_pixels": self.max_pixels, "max_side": self.max_side}

    def item(self, index: int, path: Path, load: Callable[[], Image.Image]) -> dict:
        try:
            image = load()
        except ImageLoadError as error:
            return {"index": index, "path": error.path, "reason": error.reason}
        return prepare_image(index, path, image, self.processor, keep_image=self.keep_images)


class StreamedImages(ImageFiles, IterableDataset):
    """A streamed data set's rows (`ImageRows` with streaming) -> the items of `ImageFiles`, in input order:
    DataLoader worker w of W reads the stream and decodes the batches w, w + W, ... (`batch_size` rows each),
    which the loader's round robin over its workers puts back in order."""

    def __init__(self, rows: ImageRows, processor, *, batch_size: int, **options):
        super().__init__(rows, processor, **options)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        index, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        mine = (position for position in range(len(self.paths)) if position // self.batch_size % workers == index)
        for position, value in self.paths.encoded(mine):
            yield self.item(position, self.paths.name(position),
                            lambda: self.paths.decode(position, value, **self.limits()))  # noqa: B023 (called at once)


@contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """torch's intra-op threads at 1 in this thread for the block, then back to their number.

    One image's tensors are small (3 x 224 x 224 floats): split over the cores, every elementwise
    operation of the image processor waits for each core's share, and on a machine whose cores
    are busy that wait costs several times the work (benchmarks/RESULTS.md: 15-23 ms against
    3-5 ms per photo on 2 busy cores). A DataLoader worker process already runs with 1 thread.
    OpenMP keeps the count per thread, but a thread making its first parallel call while the count
    is 1 keeps 1 for good: so only the main thread (a command's, a DataLoader worker's) narrows it;
    in any other thread (a server's request handlers, the demo's) the block leaves it as it is."""
    threads = torch.get_num_threads()
    if threads == 1 or threading.current_thread() is not threading.main_thread():
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def prepare_image(index: int, path: Path, image: Image.Image, processor, *, keep_image: bool) -> dict:
    """One decoded RGB image -> its item: preprocessed one image at a time, as the pipeline's
    preprocess does (the same model input), on one intra-op thread (`one_intra_op_thread`)."""
    with one_intra_op_thread():
        pixel_values = processor(image, return_tensors="pt")["pixel_values"][0]
    item = {
        "index": index,
        "path": path,
        "size": (image.height, image.width),
        "original_size": tuple(int(side) for side in image.info.get("original_size", (image.height, image.width))),
        "pixel_values": pixel_values,
    }
    if keep_image:  # in a worker process, (H, W, 3) uint8 for its trip through shared memory
        item["image"] = image if get_worker_info() is None else torch.from_numpy(np.array(image))
    return item


def decoded_image(image: Image.Image | torch.Tensor) -> Image.Image:
    """An image a batch kept, as a PIL image: itself when decoded in this process; made from a worker's
    uint8 (H, W, 3) tensor otherwise (a copy: for the writer threads, not the loop that feeds the model)."""
    return Image.fromarray(image.numpy()) if isinstance(image, torch.Tensor) else image


def collate_images(items: Sequence[dict]) -> ImageBatch:
    batch = ImageBatch()
    loaded = [item for item in items if "reason" not in item]
    batch.failures = [(item["path"], item["reason"]) for item in items if "reason" in item]
    batch.indices = [item["index"] for item in loaded]
    batch.paths = [item["path"] for item in loaded]
    batch.sizes = [item["size"] for item in loaded]
    batch.original_sizes = [item["original_size"] for item in loaded]
    if loaded and "image" in loaded[0]:
        batch.images = [item["image"] for item in loaded]
    if loaded:
        batch.pixel_values = torch.stack([item["pixel_values"] for item in loaded])
    return batch


def _worker_start_method() -> str | None:
    """fork on Linux (a worker starts in milliseconds, sharing the loaded libraries; Python 3.14
    makes forkserver the default, whose workers would import torch and transformers again, for
    seconds each); the platform's default elsewhere (macOS: spawn)."""
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else None


def workers_for(num_files: int, batch_size: int, num_workers: int | None = None, device: torch.device | str = "cpu") -> int:
    """The decoding processes `image_batches` starts: `num_workers` (None: the default for the
    model's `device`), at most one per batch (no idle processes for a short list)."""
    num_workers = default_num_workers(device) if num_workers is None else num_workers
    return max(0, min(num_workers, -(-num_files // max(batch_size, 1))))


@contextmanager
def image_batches(
    paths: Sequence[str | os.PathLike],
    processor,
    *,
    batch_size: int,
    num_workers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    keep_images: bool = False,
    device: torch.device | str = "cpu",
) -> Iterator[Iterator[ImageBatch]]:
    """`with image_batches(...) as batches: for batch in batches: ...`: batches of `batch_size`
    consecutive files (fewer images when some fail), decoded ahead in `num_workers` processes
    (None: `default_num_workers(device)`; 0: in this process); pixel values in pinned memory for
    a CUDA `device`. The workers are stopped on leaving."""
    options = {"max_pixels": max_pixels, "max_side": max_side, "keep_images": keep_images}
    if isinstance(paths, ImageRows) and paths.streaming:
        dataset = StreamedImages(paths, processor, batch_size=batch_size, **options)
    else:
        dataset = ImageFiles(paths, processor, **options)
    num_workers = workers_for(len(dataset), batch_size, num_workers, device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=torch.device(device).type == "cuda",
        prefetch_factor=2 if num_workers else None,
        multiprocessing_context=_worker_start_method() if num_workers else None,
    )
    iterator = iter(loader)  # forks the workers now, before the caller starts any thread
    try:
        yield iterator
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)  # at once, not when garbage-collected
        if shutdown is not None:
            shutdown()


WRITER_NICENESS = 10  # added to the writer threads' nice value on Linux (0: off)


def _lower_priority() -> None:
    """Linux: run this writer thread at a lower priority (nice +10), so that it takes the cores the
    model leaves instead of descheduling the model's OpenMP threads, which wait for each other at
    every operator (measured on 2 cores with the bundled model: `regions` 1.4x faster; no change
    with a ViT-S, whose forward pass dominates)."""
    if sys.platform.startswith("linux") and WRITER_NICENESS:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICENESS)
        except OSError:
            pass


class BackgroundWriter:
    """Run jobs on `threads` threads, at most `max_pending` waiting at a time (`submit` blocks
    beyond that, so a slow disk slows the producer instead of filling memory).

    `submit` and `collect` return the results of the jobs finished so far, in submission order;
    the first job that raised has its exception raised there (and by `finish`). Leaving the `with`
    block on an error waits for the jobs already submitted (their outputs are good: the error came
    from elsewhere), except after a job's own error or an interrupt: then queued jobs are
    cancelled and only running ones complete (each write is atomic).
    """

    def __init__(self, threads: int | None = None, max_pending: int = 16):
        self.threads = default_write_threads() if threads is None else max(1, threads)
        self.max_pending = max(1, max_pending)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="dseqjepa-write", initializer=_lower_priority)
        self._pending: deque[Future] = deque()
        self._failed = False

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        interrupted = kind is not None and not issubclass(kind, Exception)
        self._pool.shutdown(wait=True, cancel_futures=self._failed or interrupted)

    def submit(self, job: Callable, *args) -> list:
        self._pending.append(self._pool.submit(job, *args))
        return self.collect(limit=self.max_pending)

    def collect(self, limit: int | None = None) -> list:
        """Results of the finished jobs at the head of the queue; waits until at most `limit`
        jobs are pending (None: never waits)."""
        done = []
        try:
            while self._pending and (self._pending[0].done() or (limit is not None and len(self._pending) > limit)):
                done.append(self._pending.popleft().result())  # waits for it; raises its error
            for future in self._pending:  # a failed job further back stops the run now
                if future.done() and future.exception() is not None:
                    future.result()
        except BaseException:
            self._failed = True
            raise
        return done

    def finish(self) -> list:
        """Wait for every job -> their results in submission order."""
        return self.collect(limit=0)


class HostCopy:
    """Tensors copied from the model's device to the host without waiting. `get()` waits for these
    copies alone (a CUDA event), not for the work queued after them: the next batch's forward pass
    can be queued first, so an accelerator never idles while the host checks and writes results."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self._tensors = {name: tensor.to("cpu", non_blocking=True) for name, tensor in tensors.items()}
        self._event = None
        device = next(iter(tensors.values())).device
        if device.type == "cuda":
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(device))

    def get(self) -> dict[str, torch.Tensor]:
        if self._event is not None:
            self._event.synchronize()
        return self._tensors


Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]
Sink = Callable[[ImageBatch, dict[str, torch.Tensor]], Iterable[Callable[[], object]] | None]


def infer_files(
    paths: Sequence[str | os.PathLike],
    processor,
    forward: Forward,
    sink: Sink,
    *,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    batch_size: int,
    num_workers: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    keep_images: bool = False,
    write_threads: int | None = None,
    progress: bool = True,
    desc: str = "images",
    skipped: int = 0,
) -> tuple[list, list[tuple[Path, str]]]:
    """Run `forward` on batches of `paths` and give its outputs to `sink` -> (the write jobs'
    results in input order, (path, reason) for every file that could not be read).

    forward(pixel_values): pixel values (B, 3, h, w) on `device` as `dtype` (None: float32), in
    inference mode -> a dict of tensors on that device. sink(batch, outputs): the batch
    (`ImageBatch`, with `keep_images` its decoded images: `decoded_image`) and those tensors on the host,
    called one batch late in the calling thread -> None (the sink keeps what it needs) or one job
    per image (a callable without arguments) for the `write_threads` writer threads (None:
    `default_write_threads()`). num_workers: decoding processes (None: `default_num_workers(device)`;
    0: this process). The progress bar counts `skipped` files (already done) as done. Logs (INFO) one line
    with the work and how it is split, and one with the time it took.
    """
    workers = workers_for(len(paths), batch_size, num_workers, device)  # what image_batches starts
    logger.info("%s: %d image(s)%s, batches of %d on %s, %d decoding worker(s), %d writer thread(s)", desc, len(paths),
                f" ({skipped} already done)" if skipped else "", batch_size, device, workers,
                default_write_threads() if write_threads is None else write_threads)
    start = time.perf_counter()
    with (
        image_batches(
            paths, processor, batch_size=batch_size, num_workers=num_workers, max_pixels=max_pixels,
            max_side=max_side, keep_images=keep_images, device=device,
        ) as batches,  # first: the workers are forked before any thread starts
        tqdm(total=len(paths) + skipped, initial=skipped, desc=desc, unit="img", disable=not progress) as bar,
    ):
        results, failures = _run(batches, forward, sink, device=device, dtype=dtype, write_threads=write_threads,
                                 max_pending=2 * batch_size, bar=bar)
    seconds = time.perf_counter() - start
    logger.info("%s: %d image(s) done in %.1f s (%.2f img/s), %d unreadable", desc, len(paths) - len(failures), seconds,
                (len(paths) - len(failures)) / max(seconds, 1e-9), len(failures))
    return results, failures


def infer_images(
    images: Sequence[Image.Image], processor, forward: Forward, sink: Sink, *, device: torch.device | str,
    dtype: torch.dtype | None = None,
) -> list:
    """`infer_files` for RGB images already in memory, as one batch in this process (the demo's
    upload) -> the write jobs' results; their paths in the sink's batch are None."""
    batch = collate_images([prepare_image(index, None, image, processor, keep_image=True) for index, image in enumerate(images)])
    with tqdm(disable=True) as bar:
        results, _ = _run([batch], forward, sink, device=device, dtype=dtype, write_threads=1, max_pending=len(images), bar=bar)
    return results


def check_finite(outputs: dict[str, torch.Tensor], what: str, then: str = "stopped before writing this batch") -> None:
    """NonFiniteOutputError ("`what`: its weights or config hold NaN or inf; `then`") when a
    forward's "finite" flag is False: called by a sink before anything of its batch is written."""
    if not bool(outputs["finite"]):
        raise NonFiniteOutputError(f"{what}: its weights or config hold NaN or inf; {then}")


def _run(batches: Iterable[ImageBatch], forward: Forward, sink: Sink, *, device, dtype, write_threads, max_pending,
         bar) -> tuple[list, list[tuple[Path, str]]]:
    """The loop of `infer_files` and `infer_images` over batches already decoded and preprocessed."""
    results: list = []
    failures: list[tuple[Path, str]] = []

    def finished(done: list) -> None:
        results.extend(done)
        bar.update(len(done))

    def deliver(batch: ImageBatch, copy: HostCopy) -> None:
        jobs = sink(batch, copy.get())  # one host synchronisation per batch
        if jobs is None:
            bar.update(len(batch.indices))
            return
        for job in jobs:
            finished(writer.submit(job))

    with BackgroundWriter(write_threads, max_pending=max_pending) as writer:
        previous = None
        for batch in batches:
            failures.extend(batch.failures)
            bar.update(len(batch.failures))
            if batch.pixel_values is None:
                continue
            pixel_values = batch.pixel_values.to(device=device, dtype=dtype, non_blocking=True)
            with torch.inference_mode():
                copy = HostCopy(forward(pixel_values))
            if previous is not None:  # the previous batch's results, while this one runs on an accelerator
                deliver(*previous)
            previous = batch, copy
        if previous is not None:
            deliver(*previous)
        finished(writer.finish())
    return results, failures
