"""Training-time augmentation of the official code; test time uses open_clip's own ``preprocess``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
