"""The torch side of the data: ``DetectionDataset`` (records + transform), batch ``collate``,
and the loader helpers of the trainer (``EpochSampler`` / ``EpochDataset`` hand the epoch to
persistent worker processes with every index; ``worker_init``; ``log_skipped_images``).

Records come from the loaders in :mod:`nanodet_deploy.datasets` (NumPy only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DistributedSampler, RandomSampler, Sampler

from nanodet_deploy.datasets import DatasetError, ImageRecord, read_image_bgr
from nanodet_deploy.train.transforms import TransformedSample

LOG = logging.getLogger(__name__)
MAX_REPLACEMENTS = 10  # unreadable replacements tried for one sample before giving up


class SampleTransform(Protocol):
    def __call__(
        self,
        image_bgr: np.ndarray,
        boxes_xyxy: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator,
    ) -> TransformedSample: ...


class DetectionDataset(torch.utils.data.Dataset):
    """Records -> ``(image (3, H, W) float32, {"boxes_xyxy", "labels"}, meta)``.

    The random generator of sample ``i`` in epoch ``e`` is seeded with ``(seed, e, i)``,
    so augmentation is reproducible whatever the number of workers; call
    :meth:`set_epoch` at the start of every epoch (with persistent workers too).

    An image that became unreadable after loading (deleted, rewritten, truncated) does not
    stop training: sample ``i`` is replaced by record ``j``, drawn from a generator seeded
    with ``(seed, e, i, attempt)`` and augmented with sample ``i``'s generator, and
    ``meta["skipped"]`` lists why (the trainer logs it at that step). Batch sizes, the number
    of steps and every random stream stay what they would be; the replacement depends only
    on the seed, the epoch, the index and which files fail, not on the workers.
    """

    def __init__(
        self, records: Sequence[ImageRecord], transform: SampleTransform, seed: int = 0
    ) -> None:
        self.records = tuple(records)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(
        self, index: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
        skipped: list[str] = []
        attempts = MAX_REPLACEMENTS + 1 if len(self.records) > 1 else 1
        for attempt in range(attempts):
            rec = self.records[self._replacement(index, attempt)]
            try:
                image = read_image_bgr(rec.path)
            except DatasetError as exc:
                skipped.append(str(exc))
                continue
            return self._sample(index, rec, image, skipped)
        raise DatasetError(
            f"no readable image for sample {index} in {attempts} tries:\n  " + "\n  ".join(skipped)
        )

    def _replacement(self, index: int, attempt: int) -> int:
        """Record used for sample ``index``: itself, then draws among the other records."""
        if attempt == 0:
            return index
        draw = np.random.default_rng([self.seed, self.epoch, index, attempt]).integers(
            len(self.records) - 1
        )
        return int(draw) + int(draw >= index)

    def _sample(
        self, index: int, rec: ImageRecord, image: np.ndarray, skipped: list[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
        if image.shape[:2] != rec.hw:
            LOG.warning(
                "%s: image is %dx%d but the annotation says %dx%d",
                rec.path,
                image.shape[1],
                image.shape[0],
                rec.width,
                rec.height,
            )
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = self.transform(image, rec.boxes_xyxy, rec.labels, rng)
        target = {
            "boxes_xyxy": torch.from_numpy(sample.boxes_xyxy),
            "labels": torch.from_numpy(sample.labels),
        }
        meta = {
            "image_id": rec.image_id,
            "path": str(rec.path),
            "src_hw": (int(image.shape[0]), int(image.shape[1])),
            "image_hw": (int(sample.image_chw.shape[1]), int(sample.image_chw.shape[2])),
            "warp_matrix": sample.warp_matrix,
            "skipped": skipped,  # unreadable files this sample replaces (messages)
        }
        return torch.from_numpy(sample.image_chw), target, meta


Batch = tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[dict[str, Any]]]


def collate(
    samples: Sequence[tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]],
    size_multiple: int = 32,
    pad_value: float = 0.0,
) -> Batch:
    """Stack images padded bottom/right to a common size that is a multiple of ``size_multiple``.

    ``pad_value`` is applied after normalization (official: 0.0, i.e. the mean colour).
    Use ``functools.partial(collate, size_multiple=max(strides))`` as ``collate_fn``.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    images = [s[0] for s in samples]
    height = _round_up(max(im.shape[1] for im in images), size_multiple)
    width = _round_up(max(im.shape[2] for im in images), size_multiple)
    batch = images[0].new_full((len(images), images[0].shape[0], height, width), pad_value)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[1], : im.shape[2]] = im
    return batch, [s[1] for s in samples], [s[2] for s in samples]


def _round_up(value: int, multiple: int) -> int:
    return max(multiple, -(-value // multiple) * multiple) if multiple > 0 else value


# ------------------------------------------------------------------ loader helpers


class EpochSampler(Sampler):
    """Yields ``(epoch, index)``: persistent workers learn the epoch with every sample."""

    def __init__(self, inner: RandomSampler | DistributedSampler) -> None:
        self.inner = inner
        self.epoch = 0

    def set_epoch(self, epoch: int, seed: int) -> None:
        self.epoch = epoch
        if isinstance(self.inner, DistributedSampler):
            self.inner.set_epoch(epoch)
        else:
            self.inner.generator.manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


class EpochDataset(torch.utils.data.Dataset):
    """``dataset[(epoch, index)]`` = sample ``index`` augmented as in ``epoch``."""

    def __init__(self, dataset: DetectionDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


def log_skipped_images(metas: Sequence[dict[str, Any]], where: str) -> int:
    """Warn about every unreadable image a batch replaced (logged in the main process, also
    when workers loaded the batch); returns how many."""
    count = 0
    for meta in metas:
        for message in meta.get("skipped", ()):
            LOG.warning("%s: skipped %s; used %s instead", where, message, meta["path"])
            count += 1
    return count


def worker_init(_: int) -> None:
    """DataLoader workers: one thread each for OpenCV and torch (the main process trains)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
