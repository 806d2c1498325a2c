"""Training-time augmentation of the official code; test time uses open_clip's own ``preprocess``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from benchmark.errors import UserError

# kind -> (RandomResizedCrop scale, horizontal flip)
TRAIN_AUGMENTATIONS: dict[str, tuple[tuple[float, float], bool]] = {
    # CraFT's train transform (main_craft.py) for every dataset but ImageNet.
    "rrc_flip": ((0.5, 1.0), True),
    # ImageNet's: CraFT's datasets/imagenet.py crops at torchvision's default scale, (0.08, 1),
    # which is also Dassl's, the one CoOp's white-box training uses.
    "rrc_flip_imagenet": ((0.08, 1.0), True),
    # Digits: flipping a digit changes it, so no flip.
    "rrc": ((0.5, 1.0), False),
    # No augmentation: the training pass uses the test-time resize and centre crop.
    "none": ((1.0, 1.0), False),
}
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision's RandomResizedCrop default, the official code's
CROP_ATTEMPTS = 10  # torchvision's: boxes tried before the centre-crop fallback
_DRAWS = 2 * CROP_ATTEMPTS + 3  # per image: 10 areas, 10 log-ratios, the box's row and column, the flip


def train_transform(
    kind: str, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> CropAugment | Callable[..., object]:
    """RandomResizedCrop (bicubic) [+ RandomHorizontalFlip], then ToTensor and Normalize: a
    :class:`CropAugment` (draw its views through :meth:`CropAugment.seeded`); ``none``: the
    test-time resize and centre crop, a torchvision Compose."""
    if kind not in TRAIN_AUGMENTATIONS:
        raise UserError(f"unknown train augmentation {kind!r}; valid kinds: {', '.join(TRAIN_AUGMENTATIONS)}")
    scale, flip = TRAIN_AUGMENTATIONS[kind]
    if kind == "none":
        return T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size),
                          T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))])
    return CropAugment(image_size, scale, flip, tuple(mean), tuple(std))


def crop_boxes(u: np.ndarray, heights: np.ndarray, widths: np.ndarray, scale: tuple[float, float],
               ratio: tuple[float, float] = CROP_RATIO) -> np.ndarray:
    """torchvision's ``RandomResizedCrop.get_params`` for a batch: ``(top, left, height, width)`` rows.

    ``u`` holds each image's uniforms in [0, 1) (``N x 22``: the 10 attempts' areas, their 10
    log aspect ratios, the row and the column of the box). An image takes its first attempt whose
    box fits, placed uniformly; with none, the centre crop of the nearest allowed aspect ratio.
    """
    heights, widths = heights.astype(np.int64), widths.astype(np.int64)
    area = (heights * widths)[:, None]
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, :CROP_ATTEMPTS])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(lo + (hi - lo) * u[:, CROP_ATTEMPTS : 2 * CROP_ATTEMPTS])
    w = np.rint(np.sqrt(target * aspect)).astype(np.int64)  # rint: round half to even, as Python's round
    h = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= widths[:, None]) & (h > 0) & (h <= heights[:, None])
    first = fits.argmax(axis=1)
    rows = np.arange(len(u))
    h, w = h[rows, first], w[rows, first]
    top = np.floor(u[:, 2 * CROP_ATTEMPTS] * (heights - h + 1)).astype(np.int64)
    left = np.floor(u[:, 2 * CROP_ATTEMPTS + 1] * (widths - w + 1)).astype(np.int64)
    none = ~fits.any(axis=1)
    if none.any():  # torchvision's fallback: a centre crop
        hh, ww = heights[none], widths[none]
        in_ratio = ww / hh
        fh = np.where(in_ratio < min(ratio), np.rint(ww / min(ratio)), hh)  # too tall: full width
        fw = np.where(in_ratio > max(ratio), np.rint(hh * max(ratio)), ww)  # too wide: full height
        h[none], w[none] = fh.astype(np.int64), fw.astype(np.int64)
        top[none], left[none] = (hh - h[none]) // 2, (ww - w[none]) // 2
    return np.stack([top, left, h, w], axis=1)


@dataclass(frozen=True)
class CropAugment:
    """The official training augmentation (RandomResizedCrop with bicubic resampling, [horizontal
    flip,] ToTensor, Normalize), its random numbers drawn for a whole batch at once.

    The crops are torchvision's: the same box distribution (:func:`crop_boxes`), cut and resized by
    PIL as torchvision does (``crop`` then ``resize``). The draws come from a numpy generator of the
    view's seed (:meth:`seeded`), ``_DRAWS`` uniforms per image in order, so a pass is the same
    however it is cut into batches; a scalar torch draw per box cost more than the crop itself.
    """

    size: int
    scale: tuple[float, float]
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    ratio: tuple[float, float] = CROP_RATIO

    def __repr__(self) -> str:  # the feature cache's key: every parameter, and how the draws are made
        steps = [f"RandomResizedCrop(size=({self.size}, {self.size}), scale={self.scale}, "
                 f"ratio=({self.ratio[0]:.4g}, {self.ratio[1]:.4g}), interpolation=bicubic)"]
        if self.flip:
            steps.append("RandomHorizontalFlip(p=0.5)")
        steps.append(f"ToTensor() Normalize(mean={list(self.mean)}, std={list(self.std)})")
        return f"CropAugment({', '.join(steps)}; draws: numpy PCG64, {_DRAWS} per image)"

    def seeded(self, seed: int) -> SeededCrops:
        """The augmentation drawing from a generator of ``seed``: one augmented pass."""
        return SeededCrops(self, np.random.Generator(np.random.PCG64(seed)))


class SeededCrops:
    """One augmented pass of a :class:`CropAugment`: each call draws the next images' crops."""

    def __init__(self, aug: CropAugment, rng: np.random.Generator) -> None:
        self.aug, self._rng = aug, rng

    def __repr__(self) -> str:
        return repr(self.aug)

    def uint8(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The crops of ``images`` as uint8 pixels, ``N x C x size x size``."""
        a = self.aug
        u = self._rng.random((len(images), _DRAWS))
        sizes = np.array([im.size for im in images], dtype=np.int64).reshape(-1, 2)  # PIL: (width, height)
        boxes = crop_boxes(u, sizes[:, 1], sizes[:, 0], a.scale, a.ratio)
        out = []
        for im, (top, left, h, w), flip in zip(images, boxes.tolist(), u[:, -1] < 0.5):
            crop = im.crop((left, top, left + w, top + h)).resize((a.size, a.size), Image.BICUBIC)
            if a.flip and flip:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            out.append(np.asarray(crop, dtype=np.uint8))
        if any(x.ndim != 3 or x.shape != out[0].shape for x in out):
            raise ValueError(f"augmented images came out in other modes: shapes {sorted({x.shape for x in out})}; "
                             "convert them to RGB first")
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One image, normalised (``C x size x size``)."""
        return normalize_uint8(self.uint8([image]), *self.mean_std())[0]

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.aug.mean, dtype=torch.float32), torch.tensor(self.aug.std, dtype=torch.float32)


def seeded(transform: Callable, seed: int | None) -> Callable:
    """``transform`` drawing one augmented pass from ``seed`` (a :class:`CropAugment`); a
    deterministic transform (test-time preprocessing, ``none``) as it is."""
    if seed is None or not isinstance(transform, CropAugment):
        return transform
    return transform.seeded(seed)


def aug_varies(kind: str) -> bool:
    """Whether two passes of the augmentation ``kind`` over the same images can differ."""
    return kind != "none"


def split_tensor_tail(transform: Callable) -> tuple[Callable, torch.Tensor, torch.Tensor] | None:
    """``transform`` as (its image steps, mean, std) when it is a Compose ending in ToTensor and
    Normalize (ours, and open_clip's preprocess), so that a batch can be converted and normalised
    in one tensor operation (:func:`apply_batched`); None for any other transform."""
    steps = getattr(transform, "transforms", None)
    if not isinstance(transform, T.Compose) or not steps or len(steps) < 2:
        return None
    to_tensor, norm = steps[-2], steps[-1]
    # open_clip's MaybeToTensor is ToTensor for PIL images, the only input a loader gives
    if not (type(to_tensor) is T.ToTensor or type(to_tensor).__name__ == "MaybeToTensor"):
        return None
    if type(norm) is not T.Normalize:
        return None
    head = T.Compose(list(steps[:-2]))
    return head, torch.as_tensor(norm.mean, dtype=torch.float32), torch.as_tensor(norm.std, dtype=torch.float32)


def head_uint8(transform: Callable, images: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The uint8 pixels (``N x C x H x W``) that ``transform``'s image steps make of ``images``, one
    image at a time in order (random steps draw as the whole transform would), with the mean and std
    its Normalize divides by; None when the transform does not split (:func:`split_tensor_tail`) or
    the images come out in other sizes or modes."""
    tail = split_tensor_tail(transform)
    if tail is None:
        return None
    head, mean, std = tail
    arrays = [np.asarray(head(im), dtype=np.uint8) for im in images]
    if not arrays or any(a.ndim != 3 or a.shape != arrays[0].shape for a in arrays):
        return None
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), mean, std


def normalize_uint8(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """ToTensor then Normalize on a batch of uint8 pixels (``N x C x H x W``), the same floats to the bit."""
    m, s = mean.to(x.device).view(1, -1, 1, 1), std.to(x.device).view(1, -1, 1, 1)
    return x.to(torch.float32).div(255).sub_(m).div_(s)


def apply_held(transform: Callable, images: Sequence) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``transform`` applied to ``images`` as (uint8 pixels, mean, std) where it splits
    (:func:`head_uint8`), else as (the stacked float outputs, None, None); the random steps draw the
    same numbers either way. A :class:`CropAugment` must be :meth:`~CropAugment.seeded` first."""
    if isinstance(transform, CropAugment):
        raise TypeError("a CropAugment draws its crops through .seeded(seed): apply that")
    if isinstance(transform, SeededCrops):
        return (transform.uint8(images) if len(images) else torch.zeros(0, 3, transform.aug.size, transform.aug.size,
                                                                         dtype=torch.uint8), *transform.mean_std())
    if split_tensor_tail(transform) is not None:
        state = torch.get_rng_state()
        done = head_uint8(transform, images)
        if done is not None:
            return done
        torch.set_rng_state(state)  # odd sizes or modes: the whole transform per image, drawing the same numbers again
    return torch.stack([transform(im) for im in images]), None, None


def apply_batched(transform: Callable, images: Sequence) -> torch.Tensor:
    """``torch.stack([transform(im) for im in images])``, the same values to the bit (the image
    steps run per image in the same order, so random ones draw the same numbers), with ToTensor and
    Normalize applied once to the whole batch instead of once per image."""
    x, mean, std = apply_held(transform, images)
    return x if mean is None else normalize_uint8(x, mean, std)


def pixel_range(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """Each channel's valid range after Normalize: where pixels 0 and 1 land."""
    return tuple(((0.0 - m) / s, (1.0 - m) / s) for m, s in zip(mean, std))
