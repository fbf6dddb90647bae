"""Augmentation pipelines (albumentations, built from config by name), the 8 dihedral TTA views and
the crop positions of multi-crop TTA.

Pipelines work on ``HxWx4`` uint8 RGBY images. Training: optional random crop of ``image_size`` from
the larger ``train.crop_from`` load size, then the configured ops. Evaluation: the image as loaded
(at ``crop_from`` when set, like bestfitting's 512 crops from 768 resizes, predicted on the full 768).
TTA lives apart from training augmentation: :func:`dihedral` on tensors, reused by inference.
"""
from __future__ import annotations

from typing import Sequence

import albumentations as A
import numpy as np
import torch

from hpa.config import AugOp
from hpa.errors import HPAError
from hpa.registry import Registry

AUGMENTATIONS: Registry = Registry("augmentation")

for _name, _cls in {
    "hflip": A.HorizontalFlip, "vflip": A.VerticalFlip, "rotate90": A.RandomRotate90,
    "transpose": A.Transpose, "brightness_contrast": A.RandomBrightnessContrast,
    "gauss_noise": A.GaussNoise, "coarse_dropout": A.CoarseDropout,
}.items():
    AUGMENTATIONS.register(_name)(_cls)
# no default size: ``example`` is what the registry contract test builds them with
for _name, _cls in {"random_crop": A.RandomCrop, "center_crop": A.CenterCrop, "resize": A.Resize}.items():
    AUGMENTATIONS.register(_name, example={"height": 8, "width": 8})(_cls)


@AUGMENTATIONS.register("shift_scale_rotate")
def shift_scale_rotate(shift_limit: float = 0.1, scale_limit: float = 0.1, rotate_limit: float = 30,
                       border_mode: int = 0, p: float = 0.5) -> A.BasicTransform:
    """ShiftScaleRotate semantics on ``A.Affine`` (the non-deprecated albumentations 2 transform)."""
    return A.Affine(translate_percent=(-shift_limit, shift_limit),
                    scale=(1 - scale_limit, 1 + scale_limit), rotate=(-rotate_limit, rotate_limit),
                    border_mode=border_mode, p=p)


def build_op(op: AugOp, where: str = "train.augment") -> A.BasicTransform:
    """Instantiate one configured op; unknown names and bad params raise HPAError naming them."""
    factory = AUGMENTATIONS.get(op.name)
    # albumentations only warns about unknown keyword arguments; a typo must not pass silently
    AUGMENTATIONS.check_params(op.name, op.params, where)
    try:
        return factory(**op.params)
    except (TypeError, ValueError) as e:
        raise HPAError(f"{where}: {op.name}: {_one_line(e)}" if _validation(e) else
                       f"{where}: {op.name} {op.params}: {e}") from None


def _validation(e: BaseException):
    """The pydantic ValidationError behind an albumentations ValueError (it re-raises its text), or None."""
    for x in (e, e.__cause__):
        if x is not None and callable(getattr(x, "errors", None)):
            return x
    return None


def _one_line(e: BaseException) -> str:
    """``p: Input should be less than or equal to 1 (got 2)``: the first problem of a pydantic error
    without its multi-line dump and documentation URL."""
    errs = _validation(e).errors()
    first = errs[0]
    loc = ".".join(str(x) for x in first.get("loc", ())) or "params"
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    return f"{loc}: {first.get('msg', 'invalid')} (got {first.get('input')!r}){more}"


def load_size(image_size: int, crop_from: int = 0) -> int:
    """The size images are resized to when loaded (``train.crop_from`` when cropping, else
    ``data.image_size``)."""
    return crop_from or image_size


def build_train_transform(augment: Sequence[AugOp], image_size: int, crop_from: int = 0,
                          seed: int | None = None) -> A.Compose:
    """Return the training pipeline: a random ``image_size`` crop (when ``crop_from``, the load size) then
    the ``augment`` ops (``train.augment``)."""
    ops = []
    if crop_from:
        if crop_from < image_size:
            raise HPAError(f"train.crop_from ({crop_from}) must be >= data.image_size ({image_size})")
        ops.append(A.RandomCrop(image_size, image_size))
    ops += [build_op(op, f"train.augment[{i}]") for i, op in enumerate(augment)]
    return A.Compose(ops, seed=seed)


def build_eval_transform() -> A.Compose | None:
    """Return the validation/test pipeline: nothing (the full image at :func:`load_size`)."""
    return None


#: The 8 dihedral views: k = 0..3 rotate by k x 90 degrees, k = 4..7 the same after a horizontal flip.
DIHEDRAL_VIEWS: tuple[int, ...] = tuple(range(8))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Return view ``k`` (0-7) of a ``(B, C, H, W)`` batch: optional W-flip, then ``k % 4`` rot90s."""
    if not 0 <= k < 8:
        raise HPAError(f"dihedral view {k} outside 0-7")
    if k >= 4:
        x = torch.flip(x, dims=(3,))
    return torch.rot90(x, k % 4, dims=(2, 3)) if k % 4 else x


#: Crop placements of multi-crop TTA (``infer.crop_mode``).
CROP_MODES: tuple[str, ...] = ("fixed", "random")


def crop_boxes(size: int, crop: int, n: int, mode: str = "fixed", seed: int = 0) -> list[tuple[int, int]]:
    """Top-left ``(y, x)`` of ``n`` ``crop`` x ``crop`` crops of a ``size`` x ``size`` image.

    ``fixed``: the centre, then the top-left, top-right, bottom-left and bottom-right corners (at most
    5, like torchvision's FiveCrop). ``random``: ``n`` positions drawn uniformly with ``seed`` (the same
    for every image, so a prediction is repeatable), as bestfitting's random test crops.
    """
    if mode not in CROP_MODES:
        raise HPAError(f"infer.crop_mode: '{mode}' not one of {', '.join(CROP_MODES)}")
    if crop > size:
        raise HPAError(f"multi-crop TTA: crop {crop} px is larger than the {size} px image")
    if n < 1:
        raise HPAError(f"infer.crops: must be >= 1 for multi-crop TTA, got {n}")
    far = size - crop
    if mode == "random":
        rng = np.random.default_rng(seed)
        return [(int(y), int(x)) for y, x in rng.integers(0, far + 1, size=(n, 2))]
    fixed = [(far // 2, far // 2), (0, 0), (0, far), (far, 0), (far, far)]
    if n > len(fixed):
        raise HPAError(f"infer.crops: crop_mode 'fixed' has {len(fixed)} crops (centre and 4 corners), "
                       f"got {n}; use crop_mode: random for more")
    return fixed[:n]
