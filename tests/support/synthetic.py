"""Synthetic images that are plainly not head CT: photographs, a chest radiograph, blank, noise."""

from __future__ import annotations

import cv2
import numpy as np


def colour_shapes(seed: int = 0, size: tuple[int, int] = (384, 512)) -> np.ndarray:
    """A colour "photograph": a sky-to-grass gradient with random coloured shapes (BGR uint8)."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = np.zeros((height, width, 3), np.uint8)
    for row in range(height):
        share = row / height
        image[row] = (230 - 120 * share, 180 - 20 * share, 90 + 40 * share) if share < 0.6 else (40, 150, 60)
    for _ in range(12):
        colour = tuple(int(value) for value in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            cv2.circle(image, centre, int(rng.integers(10, 80)), colour, thickness=-1)
        else:
            corner = (centre[0] + int(rng.integers(20, 120)), centre[1] + int(rng.integers(20, 120)))
            cv2.rectangle(image, centre, corner, colour, thickness=-1)
    return image


def colour_noise_photograph(seed: int = 0, size: tuple[int, int] = (320, 320)) -> np.ndarray:
    """Smooth, natural-looking colour noise (blurred random colour fields, BGR uint8)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (size[0] // 16, size[1] // 16, 3)).astype(np.uint8)
    image = cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    texture = rng.normal(0, 8, image.shape)
    return np.clip(image.astype(np.float32) + texture, 0, 255).astype(np.uint8)


def colour_head_photograph(size: int = 320) -> np.ndarray:
    """A skin-coloured oval face on a blue background: head-shaped but a photograph (BGR uint8)."""
    image = np.full((size, size, 3), (180, 120, 40), np.uint8)
    cv2.ellipse(image, (size // 2, size // 2), (size // 3, int(size * 0.42)), 0, 0, 360, (140, 170, 225), -1)
    cv2.circle(image, (size // 2 - 40, size // 2 - 30), 12, (60, 40, 30), -1)
    cv2.circle(image, (size // 2 + 40, size // 2 - 30), 12, (60, 40, 30), -1)
    cv2.ellipse(image, (size // 2, size // 2 + 60), (45, 15), 0, 0, 180, (60, 60, 170), -1)
    return image


def chest_radiograph(size: tuple[int, int] = (512, 512), seed: int = 0) -> np.ndarray:
    """A chest radiograph-like image: bright body, two dark lung fields, a spine (grey uint8)."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = np.full((height, width), 20, np.float32)
    # The body fills the frame from side to side and runs off the top and bottom.
    cv2.rectangle(image, (int(width * 0.04), 0), (int(width * 0.96), height - 1), 170, -1)
    cv2.ellipse(
        image,
        (int(width * 0.3), int(height * 0.45)),
        (int(width * 0.15), int(height * 0.32)),
        0,
        0,
        360,
        45,
        -1,
    )
    cv2.ellipse(
        image,
        (int(width * 0.7), int(height * 0.45)),
        (int(width * 0.15), int(height * 0.32)),
        0,
        0,
        360,
        45,
        -1,
    )
    cv2.rectangle(image, (int(width * 0.46), 0), (int(width * 0.54), height - 1), 235, -1)
    cv2.ellipse(
        image,
        (int(width * 0.55), int(height * 0.62)),
        (int(width * 0.12), int(height * 0.1)),
        0,
        0,
        360,
        190,
        -1,
    )
    image = cv2.GaussianBlur(image, (0, 0), 4) + rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def blank(size: tuple[int, int] = (256, 256), level: int = 0) -> np.ndarray:
    """A uniform grey image."""
    return np.full(size, level, np.uint8)


def noise(size: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """Uniform grey noise."""
    return np.random.default_rng(seed).integers(0, 256, size).astype(np.uint8)


def noise_in_head_shape(size: tuple[int, int] = (256, 256), seed: int = 0) -> np.ndarray:
    """A solid, head-shaped ellipse filled with bright grey noise instead of tissue."""
    height, width = size
    rows, cols = np.mgrid[:height, :width]
    inside = ((rows - height / 2) / (0.4 * height)) ** 2 + ((cols - width / 2) / (0.33 * width)) ** 2 < 1
    image = np.zeros(size, np.uint8)
    image[inside] = np.random.default_rng(seed).integers(60, 256, int(inside.sum()))
    return image


def not_head_ct() -> dict[str, np.ndarray]:
    """Every synthetic image that must be judged out of scope, by name."""
    return {
        "colour_shapes": colour_shapes(0),
        "colour_shapes_2": colour_shapes(1),
        "colour_noise_photograph": colour_noise_photograph(0),
        "colour_head_photograph": colour_head_photograph(),
        "chest_radiograph": chest_radiograph(),
        "chest_radiograph_wide": chest_radiograph((400, 600), seed=1),
        "blank_black": blank(),
        "blank_grey": blank(level=128),
        "noise": noise(),
        "noise_large": noise((512, 512), seed=1),
        "noise_in_head_shape": noise_in_head_shape(),
    }
