"""Training-time augmentation of the official code; test time uses open_clip's own ``preprocess``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
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


def train_transform(
    kind: str, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[..., object]:
    """RandomResizedCrop (bicubic) [+ RandomHorizontalFlip], then ToTensor and Normalize."""
    if kind not in TRAIN_AUGMENTATIONS:
        raise UserError(f"unknown train augmentation {kind!r}; valid kinds: {', '.join(TRAIN_AUGMENTATIONS)}")
    scale, flip = TRAIN_AUGMENTATIONS[kind]
    if kind == "none":
        steps = [T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)]
    else:
        steps = [T.RandomResizedCrop(image_size, scale=scale, interpolation=T.InterpolationMode.BICUBIC)]
    if flip:
        steps.append(T.RandomHorizontalFlip(p=0.5))
    steps += [T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]
    return T.Compose(steps)


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
    same numbers either way."""
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
