"""An image set's preprocessed images for image-side queries, held compactly.

Image-side methods (BPT-VLM, BlackVIP) re-encode images under their prompts, so the model's side
keeps the images themselves. Held as the uint8 pixels the transform's image steps made (a quarter
of float32's memory: ImageNet's 50,000 test images at 224 px are 7.5 GB, not 30 GB), on the host
when larger than :data:`DEVICE_BYTES` (a training set, queried at every step, fits on the device;
an evaluation split may not), and normalised chunk by chunk as passes need them: the same floats to
the bit as the whole transform gives.
"""

from __future__ import annotations

import torch

from benchmark.datasets.transforms import normalize_uint8

DEVICE_BYTES = 2 * 2**30  # an image set up to this size is held on the engine's device


class PixelSet:
    """``N`` preprocessed images: uint8 pixels with the mean and std to normalise them, or (made by
    hand, in tests and measurements) float pixels already normalised."""

    def __init__(self, images: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        if images.dim() != 4:
            raise ValueError(f"pixels must be images x channels x height x width, got shape {tuple(images.shape)}")
        if (images.dtype == torch.uint8) != (mean is not None and std is not None):
            raise ValueError("uint8 pixels need their mean and std; float pixels are already normalised")
        self.images, self.mean, self.std = images, mean, std

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape)

    @property
    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()

    def rows(self, indices: torch.Tensor | slice | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
        """The normalised float32 images at ``indices`` (all when None), on ``device``."""
        x = self.images
        if indices is not None:
            x = x[indices.to(x.device) if isinstance(indices, torch.Tensor) else indices]
        x = x.to(device)
        if self.mean is None:
            return x.to(torch.float32)
        return normalize_uint8(x, self.mean, self.std)

    def placed(self, device: str | torch.device) -> "PixelSet":
        """This set on ``device`` when it fits :data:`DEVICE_BYTES`, else on the host."""
        where = torch.device(device) if self.nbytes <= DEVICE_BYTES else torch.device("cpu")
        return self if self.images.device == where else PixelSet(self.images.to(where), self.mean, self.std)

    def subset(self, indices: torch.Tensor | None) -> "PixelSet":
        """The images at ``indices`` (all when None), still held as they are."""
        if indices is None:
            return self
        return PixelSet(self.images[indices.to(self.images.device)], self.mean, self.std)


def as_pixel_set(pixels: "PixelSet | torch.Tensor") -> PixelSet:
    return pixels if isinstance(pixels, PixelSet) else PixelSet(pixels.detach())
