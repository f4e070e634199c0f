"""Display windows on Hounsfield units, as small classes with plain arguments."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BONE_WINDOW", "BRAIN_WINDOW", "SUBDURAL_WINDOW", "Window"]


@dataclass(frozen=True)
class Window:
    """A linear display window: ``center - width/2`` maps to 0 and ``center + width/2`` to 1."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if self.width <= 0:
            raise ValueError(f"Window width must be positive, got {self.width}.")

    @property
    def lower(self) -> float:
        return self.center - self.width / 2.0

    @property
    def upper(self) -> float:
        return self.center + self.width / 2.0

    def apply(self, hounsfield: np.ndarray) -> np.ndarray:
        """Window an array of Hounsfield units to float32 in [0, 1]."""
        values = np.asarray(hounsfield, dtype=np.float32)
        return np.clip((values - self.lower) / self.width, 0.0, 1.0).astype(np.float32)

    def apply_uint8(self, hounsfield: np.ndarray) -> np.ndarray:
        """Window to 8-bit grey levels, as a display or a PNG would show it."""
        return np.round(self.apply(hounsfield) * 255.0).astype(np.uint8)


BRAIN_WINDOW = Window(center=40.0, width=80.0)
SUBDURAL_WINDOW = Window(center=80.0, width=200.0)
BONE_WINDOW = Window(center=600.0, width=2800.0)
