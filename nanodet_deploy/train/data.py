"""The torch side of the data: ``DetectionDataset`` (records + transform), batch ``collate``,
and the loader helpers of the trainer (``EpochSampler`` / ``EpochDataset`` hand the epoch to
persistent worker processes with every index; ``worker_init``).

Records come from the loaders in :mod:`nanodet_deploy.datasets` (NumPy only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DistributedSampler, RandomSampler, Sampler

from nanodet_deploy.datasets import ImageRecord, read_image_bgr
from nanodet_deploy.train.transforms import TransformedSample

LOG = logging.getLogger(__name__)


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
        rec = self.records[index]
        image = read_image_bgr(rec.path)
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


def worker_init(_: int) -> None:
    """DataLoader workers: one thread each for OpenCV and torch (the main process trains)."""
    import cv2

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
