"""Host-side decoding of list-file images and a prefetching loader that keeps the device fed.

Images too many to hold in device memory (ImageNet-LT, Places-LT, iNaturalist) are decoded with PIL by
a pool of worker threads (PIL releases the GIL while it decodes and resizes, so threads scale with
cores) and reach the step as uint8 batches; normalisation happens on the device, so the host-to-device
copy is a quarter of the float32 size.

Transforms (the ones SADE uses for these datasets):

* training: random-resized crop -- an area share ``s ~ U(min_scale, 1)`` and aspect ratio
  ``a ~ logU(3/4, 4/3)``, a box of ``sqrt(s*A*a) x sqrt(s*A/a)`` at a uniform position (10 tries, then
  the largest centred box of admissible aspect) -- resized to ``size x size``, a horizontal flip with
  probability 1/2, and optionally brightness/contrast/saturation jitter by factors ``U(1-j, 1+j)`` in
  random order;
* test: the shorter side resized to ``resize``, then the centre ``size x size`` crop.

Crop and resize are one ``Image.resize(box=...)`` call, and JPEGs are first decoded at the smallest
power-of-two reduction (``Image.draft``) that still leaves the box at least ``size`` pixels wide, which
skips most of the decoding work on large photographs without lowering the output resolution.

Randomness is a function of ``(seed, epoch, position in the epoch)`` only, so a run's batches are the
same whatever the number of threads or processes, and a resumed run sees the batches it would have seen.

:class:`Loader` yields an epoch's global batches in order. A producer thread keeps ``prefetch`` batches
being decoded and up to ``prefetch`` finished batches already transferred to the device (through the
``put`` callback) in a bounded queue, so the training step finds its next batch waiting as long as
decoding keeps up with the step (see docs/performance.md for measurements). :class:`DecodedImages` is the
evaluation side: an array-like view that decodes the slices it is asked for.

Each loader and each view owns its threads and ends them in ``close()`` (both are context managers);
there is no pool shared across the module.
"""

from __future__ import annotations

import collections
import concurrent.futures
import math
import os
import queue
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageEnhance

from hyperlt.data.lists import ImageList
from hyperlt.errors import UserInputError, require

_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
_CROP_TRIES = 10
_END = object()
Box = tuple[float, float, float, float]


def default_workers(workers: int = 0) -> int:
  """``workers``, or every core when it is 0."""
  return workers if workers > 0 else (os.cpu_count() or 1)


def random_resized_box(rng: np.random.Generator, width: int, height: int, min_scale: float) -> Box:
  """A random crop box (x0, y0, x1, y1) of a ``width x height`` image, as described in the module doc."""
  area = width * height
  log_lo, log_hi = math.log(_ASPECT_RANGE[0]), math.log(_ASPECT_RANGE[1])
  for _ in range(_CROP_TRIES):
    target = area * rng.uniform(min_scale, 1.0)
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
    if 0 < w <= width and 0 < h <= height:
      x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
      return (x0, y0, x0 + w, y0 + h)
  ratio = width / height
  if ratio < _ASPECT_RANGE[0]:
    w, h = width, round(width / _ASPECT_RANGE[0])
  elif ratio > _ASPECT_RANGE[1]:
    w, h = round(height * _ASPECT_RANGE[1]), height
  else:
    w, h = width, height
  x0, y0 = (width - w) // 2, (height - h) // 2
  return (x0, y0, x0 + w, y0 + h)


def centre_box(width: int, height: int, size: int, resize: int) -> Box:
  """The region of the original image that "shorter side to ``resize``, centre ``size`` crop" keeps."""
  side = size * min(width, height) / resize
  cx, cy = width / 2, height / 2
  return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def _draft(img: Image.Image, box: Box, size: int) -> Box:
  """Lets a JPEG decode at a reduced scale when the box stays >= ``size`` pixels; returns the box rescaled."""
  shrink = min(box[2] - box[0], box[3] - box[1]) / size
  if img.format != "JPEG" or shrink < 2:
    return box
  width, height = img.size
  img.draft("RGB", (math.ceil(width / shrink), math.ceil(height / shrink)))
  sx, sy = img.size[0] / width, img.size[1] / height
  return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def _crop_resized(images: ImageList, i: int, size: int, box_of: Callable[[int, int], Box]) -> Image.Image:
  """Image ``i`` of the list, the region ``box_of(width, height)`` resized to ``size x size`` RGB."""
  path = images.path(i)
  try:
    with Image.open(path) as img:
      box = _draft(img, box_of(*img.size), size)
      if img.mode != "RGB":
        img = img.convert("RGB")
      return img.resize((size, size), Image.BILINEAR, box=box)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise UserInputError(f"{images.where(i)}: cannot read image {path}: {e}") from None


def decode_eval(images: ImageList, i: int, size: int, resize: int) -> np.ndarray:
  """uint8 [size, size, 3]: the test transform of image ``i``."""
  return np.asarray(_crop_resized(images, i, size, lambda w, h: centre_box(w, h, size, resize)))


def _jitter(img: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
  enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
  for which in rng.permutation(len(enhancers)):
    img = enhancers[which](img).enhance(rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength))
  return img


def decode_train(images: ImageList, i: int, size: int, rng: np.random.Generator, min_scale: float = 0.08,
                 flip: bool = True, color_jitter: float = 0.0) -> np.ndarray:
  """uint8 [size, size, 3]: the training transform of image ``i``, drawn from ``rng``."""
  img = _crop_resized(images, i, size, lambda w, h: random_resized_box(rng, w, h, min_scale))
  if flip and rng.random() < 0.5:
    img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  if color_jitter > 0:
    img = _jitter(img, rng, color_jitter)
  return np.asarray(img)


class DecodedImages:
  """A read-only uint8 array view ``[N, size, size, 3]`` of a list's images under the test transform.

  Indexing (an integer, a slice, an index or boolean array) decodes just those images with the view's
  own pool of ``workers`` threads. After a contiguous slice the next slice of the same length is
  decoded in the background, so code that walks the images in fixed-size chunks (feature extraction)
  overlaps decoding and compute.

  The threads start with the first batch decoded and end with :meth:`close` (or leaving a ``with``
  block); a closed view can still be read, and starts its threads again.
  """

  dtype = np.dtype(np.uint8)
  ndim = 4

  def __init__(self, images: ImageList | None, size: int, resize: int, workers: int = 0):
    self._images, self._size, self._resize = images, size, resize
    self._workers = default_workers(workers)
    self._pool: concurrent.futures.ThreadPoolExecutor | None = None
    self._lock = threading.Lock()
    self._ahead: tuple[int, int, list[concurrent.futures.Future]] | None = None

  def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
    with self._lock:
      if self._pool is None:
        self._pool = concurrent.futures.ThreadPoolExecutor(self._workers, thread_name_prefix="hyperlt-decode")
      return self._pool

  def close(self) -> None:
    """Stops the decoding threads (pending read-ahead is dropped) and waits for them to end."""
    with self._lock:
      pool, self._pool, self._ahead = self._pool, None, None
    if pool is not None:
      pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self) -> "DecodedImages":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  @property
  def shape(self) -> tuple[int, int, int, int]:
    return (len(self), self._size, self._size, 3)

  def __len__(self) -> int:
    return 0 if self._images is None else len(self._images)

  def _submit(self, index: Sequence[int]) -> list[concurrent.futures.Future]:
    pool = self._executor()
    return [pool.submit(decode_eval, self._images, int(i), self._size, self._resize) for i in index]

  def _gather(self, futures: list[concurrent.futures.Future]) -> np.ndarray:
    if not futures:
      return np.zeros((0, self._size, self._size, 3), np.uint8)
    return np.stack([f.result() for f in futures])

  def __getitem__(self, key: Any) -> np.ndarray:
    n = len(self)
    if isinstance(key, (int, np.integer)):
      require(-n <= key < n, f"image index {key} out of range for {n} images")
      return decode_eval(self._images, int(key) % n, self._size, self._resize)
    if isinstance(key, slice):
      start, stop, step = key.indices(n)
      if step == 1 and stop > start:
        return self._contiguous(start, stop)
      index = np.arange(start, stop, step)
    else:
      index = np.asarray(key)
      if index.dtype == bool:
        require(index.shape == (n,), f"boolean mask of shape {index.shape} for {n} images")
        index = np.flatnonzero(index)
      require(index.ndim == 1 and np.issubdtype(index.dtype, np.integer),
              f"expected an integer, a slice or a 1-D index array, got {key!r}")
      require(bool(np.all((index >= -n) & (index < n))), f"image index out of range for {n} images")
      index = index % max(n, 1)
    return self._gather(self._submit(index))

  def _contiguous(self, start: int, stop: int) -> np.ndarray:
    ahead, self._ahead = self._ahead, None
    if ahead is not None and ahead[:2] == (start, stop):
      futures = ahead[2]
    else:
      if ahead is not None:
        for f in ahead[2]:
          f.cancel()
      futures = self._submit(range(start, stop))
    following = min(stop + (stop - start), len(self))
    if following > stop:
      self._ahead = (stop, following, self._submit(range(stop, following)))
    return self._gather(futures)

  def __array__(self, dtype=None, copy=None):
    array = self[:]
    return array.astype(dtype) if dtype is not None else array


class Loader:
  """Global training batches of a list, decoded by worker threads and handed over ahead of the step.

  Args:
    images: the training list.
    batch_size: global batch size B; an epoch is ``len(images) // B`` batches (the remainder is dropped).
    size: output side of the random-resized crop.
    seed: with the epoch, fixes the order and every random transform.
    min_scale, flip, color_jitter: the training transform (see :func:`decode_train`).
    workers: decoding threads (0 = every core).
    prefetch: batches decoded ahead, and finished batches waiting, each at most this many.
    put: ``(images_uint8 [b, S, S, 3], labels int32 [b]) -> batch``, run in the producer thread so the
      host-to-device copy overlaps the step (e.g. ``jax.device_put`` with a sharding); identity if None.
    rows: the rows of each global batch this process decodes (multi-host); all rows if None.
  """

  def __init__(self, images: ImageList, batch_size: int, size: int, seed: int, *, min_scale: float = 0.08,
               flip: bool = True, color_jitter: float = 0.0, workers: int = 0, prefetch: int = 2,
               put: Callable[[np.ndarray, np.ndarray], Any] | None = None, rows: slice | None = None):
    require(len(images) >= batch_size, f"optim.batch_size: {batch_size} exceeds the {len(images)} "
            f"images of {images.source}")
    require(prefetch >= 1, f"data.prefetch: expected >= 1, got {prefetch}")
    self.images, self.batch_size, self.size, self.seed = images, batch_size, size, seed
    self.min_scale, self.flip, self.color_jitter = min_scale, flip, color_jitter
    self.prefetch = prefetch
    self.put = put or (lambda x, y: (x, y))
    self.rows = rows if rows is not None else slice(0, batch_size)
    self.steps_per_epoch = len(images) // batch_size
    self.wait_s = 0.0  # time the consumer spent waiting for a batch (input-bound time)
    self._pool = concurrent.futures.ThreadPoolExecutor(default_workers(workers),
                                                       thread_name_prefix="hyperlt-loader")

  def order(self, epoch: int) -> np.ndarray:
    """The epoch's permutation of the list (the same in every process)."""
    return np.random.default_rng((self.seed, epoch)).permutation(len(self.images))

  def _decode(self, epoch: int, position: int, i: int) -> np.ndarray:
    rng = np.random.default_rng((self.seed, epoch, position))
    return decode_train(self.images, i, self.size, rng, self.min_scale, self.flip, self.color_jitter)

  def epoch(self, epoch: int, start: int = 0) -> Iterator[Any]:
    """Batches ``start..steps_per_epoch-1`` of ``epoch``, each as returned by ``put``."""
    order = self.order(epoch)
    rows = range(*self.rows.indices(self.batch_size))
    ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
    stop = threading.Event()

    def hand_over(item) -> None:
      while not stop.is_set():
        try:
          ready.put(item, timeout=0.05)
          return
        except queue.Full:
          continue

    def produce() -> None:
      pending: collections.deque = collections.deque()

      def finish_oldest() -> None:
        step, futures = pending.popleft()
        x = np.stack([f.result() for f in futures])
        y = self.images.labels[order[[step * self.batch_size + r for r in rows]]]
        hand_over(self.put(x, y))

      try:
        for step in range(start, self.steps_per_epoch):
          if stop.is_set():
            break
          positions = [step * self.batch_size + r for r in rows]
          pending.append((step, [self._pool.submit(self._decode, epoch, p, int(order[p])) for p in positions]))
          if len(pending) > self.prefetch:
            finish_oldest()
        while pending and not stop.is_set():
          finish_oldest()
        hand_over(_END)
      except BaseException as e:  # pylint: disable=broad-except  # Re-raised in the consumer.
        hand_over(e)
      finally:
        for _, futures in pending:
          for f in futures:
            f.cancel()

    producer = threading.Thread(target=produce, name="hyperlt-producer", daemon=True)
    producer.start()
    try:
      while True:
        tick = time.perf_counter()
        item = ready.get()
        self.wait_s += time.perf_counter() - tick
        if item is _END:
          return
        if isinstance(item, BaseException):
          raise item
        yield item
    finally:
      stop.set()
      producer.join()

  def close(self) -> None:
    self._pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self) -> "Loader":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
