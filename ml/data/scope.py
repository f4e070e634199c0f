"""Is this image a brain-window head CT slice at all? A documented heuristic, not a model.

The classifier was trained on axial head CT slices only; shown a photograph or a chest
radiograph it still answers with a probability, and that number means nothing. The service
therefore asks :func:`assess_scope` first and flags images that fail it as out of scope.

Four plain measurements, each with its reason when it fails:

1. **Colour** (``colourfulness``): CT slices are grey. Colour photographs, and most figures
   that are not CT, have saturated colour. Hasler and Suesstrunk's colourfulness metric is
   measured on the decoded image *before* its conversion to grey (see
   :func:`colourfulness`; :func:`ml.data.imaging.decode_image` keeps it in the metadata).
2. **Content**: a blank or almost uniform image has nothing to assess (``contrast``).
3. **Head shape**: :func:`ml.data.preprocessing.head_mask` must find a head-sized component
   whose outline is close to an ellipse (``ellipse_fit``: overlap with the ellipse of the same
   second moments) and which does not fill the frame edge to edge (``edge_contact``), as a
   radiograph's body does.
4. **Skull and tissue**: the brightest structure of a brain-window slice is the skull, which
   rings the head; ``rim_coverage`` is the share of directions from the head's centre in
   which the outer band of the head reaches the head's bright level. Brain tissue is smooth,
   so the high-frequency energy inside the head (``roughness``) stays low; noise fails here.

A DICOM file whose Modality is not CT is out of scope whatever its pixels look like.

The thresholds were set on every slice of the project's datasets (head_ct, the CT-ICH brain
window and the RSNA DICOM files: all in scope) and on synthetic photographs, chest
radiograph-like images, blank images and noise (all out of scope); see
``tests/ml/test_scope.py``. On those 2,078 real slices the measurements ranged: colourfulness
0 to 20 (a few published figures carry tinted arrows), ellipse fit down to 0.45, edge contact
up to 0.65 (tightly cropped figures), rim coverage down to 0.42 (skull-base slices, where the
face and ears lie outside the skull), roughness up to 0.05. The synthetic images reach
colourfulness over 100, rim coverage at most 0.2 (chest) and roughness 0.25 (noise). The
limits sit between the two with a margin on both sides; the shape limits are deliberately
loose, so they only catch outlines no head has.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from ml.data.preprocessing import head_mask, to_grayscale

__all__ = ["ScopeAssessment", "ScopeThresholds", "assess_scope", "colourfulness"]


@dataclass(frozen=True)
class ScopeThresholds:
    """Limits of :func:`assess_scope`; an image outside any of them is out of scope.

    Attributes:
        max_colourfulness: largest Hasler-Suesstrunk colourfulness of a CT slice (0 = grey).
        min_contrast: smallest standard deviation of grey levels (0..1) of a usable image.
        min_head_fraction: smallest share of the image the head may cover.
        min_ellipse_fit: smallest overlap (intersection over union) of the head with its
            moment-equivalent ellipse.
        max_edge_contact: largest share of the image border the head may cover.
        min_rim_coverage: smallest share of directions with a bright skull rim.
        max_roughness: largest high-frequency energy inside the head, relative to its range.
        rays: directions sampled for the rim.
        rim_depth: depth of the outer band searched for the skull, as a share of the distance
            from the centre to the outline.
    """

    max_colourfulness: float = 40.0
    min_contrast: float = 0.03
    min_head_fraction: float = 0.03
    min_ellipse_fit: float = 0.35
    max_edge_contact: float = 0.8
    min_rim_coverage: float = 0.3
    max_roughness: float = 0.12
    rays: int = 72
    rim_depth: float = 0.6


@dataclass(frozen=True)
class ScopeAssessment:
    """Whether an image looks like a brain-window head CT slice, and why not.

    ``reasons`` is empty when ``in_scope``; otherwise each entry is a sentence a person can
    read. The measurements are kept so that a decision can be explained and recalibrated.
    """

    in_scope: bool
    reasons: list[str] = field(default_factory=list)
    colourfulness: float = 0.0
    contrast: float = 0.0
    head_fraction: float = 0.0
    ellipse_fit: float = 0.0
    edge_contact: float = 0.0
    rim_coverage: float = 0.0
    roughness: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in values.items()}


def colourfulness(image: np.ndarray) -> float:
    """Hasler and Suesstrunk's colourfulness of a colour image (0 for grey; photographs ~20-100).

    Args:
        image: H x W x 3 or H x W x 4 array (any channel order; alpha is ignored), or a 2-D
            grey image (colourfulness 0).
    """
    array = np.asarray(image)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 1):
        return 0.0
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"Expected a 2-D grey or a 3/4-channel colour image, got shape {array.shape}.")
    colour = array[:, :, :3].astype(np.float32)
    if array.dtype != np.uint8:
        # Bring 16-bit or float images to the 0..255 scale the metric's constants assume.
        high = float(colour.max())
        colour = colour * (255.0 / high) if high > 0 else colour
    first, second, third = colour[:, :, 0], colour[:, :, 1], colour[:, :, 2]
    red_green = first - second
    yellow_blue = 0.5 * (first + second) - third
    spread = float(np.hypot(red_green.std(), yellow_blue.std()))
    mean = float(np.hypot(red_green.mean(), yellow_blue.mean()))
    return spread + 0.3 * mean


def _ellipse_fit(mask: np.ndarray) -> float:
    """Intersection over union of ``mask`` and the ellipse with its centroid and second moments."""
    moments = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    area = moments["m00"]
    if area <= 0:
        return 0.0
    centre_x, centre_y = moments["m10"] / area, moments["m01"] / area
    covariance = np.array([[moments["mu20"], moments["mu11"]], [moments["mu11"], moments["mu02"]]]) / area
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    # A filled ellipse with semi-axis a has variance a^2 / 4 along that axis.
    semi_axes = 2.0 * np.sqrt(np.maximum(eigenvalues, 0.0))
    angle = float(np.degrees(np.arctan2(eigenvectors[1, 1], eigenvectors[0, 1])))
    ellipse = np.zeros(mask.shape, dtype=np.uint8)
    cv2.ellipse(
        ellipse,
        (int(round(centre_x)), int(round(centre_y))),
        (max(1, int(round(semi_axes[1]))), max(1, int(round(semi_axes[0])))),
        angle,
        0,
        360,
        1,
        thickness=cv2.FILLED,
    )
    inside = ellipse.astype(bool)
    union = np.logical_or(inside, mask).sum()
    return float(np.logical_and(inside, mask).sum() / union) if union else 0.0


def _edge_contact(mask: np.ndarray) -> float:
    """Share of the image's border pixels that belong to the mask."""
    border = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(border.mean())


def _rim_coverage(gray: np.ndarray, mask: np.ndarray, rays: int, depth: float) -> float:
    """Share of directions in which the head's outer band reaches its bright (bone) level."""
    values = gray[mask]
    bright = max(0.45, float(np.percentile(values, 99.0)) - 0.15)
    rows, cols = np.nonzero(mask)
    centre_row, centre_col = rows.mean(), cols.mean()
    height, width = mask.shape
    reach = float(np.hypot(height, width))
    steps = np.arange(0.0, reach, 0.5)
    covered = 0
    for angle in np.linspace(0.0, 2.0 * np.pi, rays, endpoint=False):
        ray_rows = np.round(centre_row + steps * np.sin(angle)).astype(int)
        ray_cols = np.round(centre_col + steps * np.cos(angle)).astype(int)
        valid = (ray_rows >= 0) & (ray_rows < height) & (ray_cols >= 0) & (ray_cols < width)
        ray_rows, ray_cols = ray_rows[valid], ray_cols[valid]
        inside = np.flatnonzero(mask[ray_rows, ray_cols])
        if inside.size == 0:
            continue
        # The outline along this ray is its last head pixel; search inward from there.
        outline = int(inside[-1])
        start = int(outline - max(2.0, depth * outline))
        band = gray[ray_rows[max(0, start) : outline + 1], ray_cols[max(0, start) : outline + 1]]
        if band.size and float(band.max()) >= bright:
            covered += 1
    return covered / rays


def _roughness(gray: np.ndarray, mask: np.ndarray) -> float:
    """Median high-frequency residual inside the head, relative to its intensity range."""
    smooth = cv2.GaussianBlur(gray, (5, 5), 1.5)
    residual = np.abs(gray - smooth)[mask]
    low, high = np.percentile(gray[mask], [5.0, 95.0])
    return float(np.median(residual) / max(float(high - low), 1e-3))


def assess_scope(
    image: np.ndarray,
    colourfulness_value: float | None = None,
    modality: str | None = None,
    thresholds: ScopeThresholds | None = None,
) -> ScopeAssessment:
    """Decide whether ``image`` looks like a brain-window head CT slice.

    Args:
        image: the decoded image: 2-D grey (uint8 or [0, 1] float) or colour (H x W x 3/4).
        colourfulness_value: the colourfulness of the original decoded image when ``image``
            is already grey (the decoder converts colour to grey and keeps this number);
            measured from ``image`` when omitted.
        modality: the DICOM Modality, when the image came from DICOM.
        thresholds: limits; :class:`ScopeThresholds` defaults when omitted.

    Returns:
        The decision, the reasons for an out-of-scope decision and the measurements.
    """
    limits = thresholds or ScopeThresholds()
    reasons: list[str] = []
    colour = colourfulness(image) if colourfulness_value is None else float(colourfulness_value)
    if modality is not None and modality.strip().upper() not in ("", "CT"):
        reasons.append(f"The DICOM modality is {modality.strip()!r}, not CT.")
    if colour > limits.max_colourfulness:
        reasons.append(f"The image is in colour (colourfulness {colour:.0f}); CT slices are greyscale.")
    gray = to_grayscale(image)
    contrast = float(gray.std())
    measures: dict[str, float] = {"colourfulness": colour, "contrast": contrast}
    if contrast < limits.min_contrast:
        reasons.append("The image is blank or almost uniform.")
        return ScopeAssessment(in_scope=False, reasons=reasons, **measures)
    mask = head_mask(gray)
    if mask is None or mask.mean() < limits.min_head_fraction:
        reasons.append("No head-shaped region was found in the image.")
        return ScopeAssessment(in_scope=False, reasons=reasons, **measures)
    measures.update(
        head_fraction=float(mask.mean()),
        ellipse_fit=_ellipse_fit(mask),
        edge_contact=_edge_contact(mask),
        rim_coverage=_rim_coverage(gray, mask, limits.rays, limits.rim_depth),
        roughness=_roughness(gray, mask),
    )
    if measures["ellipse_fit"] < limits.min_ellipse_fit or measures["edge_contact"] > limits.max_edge_contact:
        reasons.append("The bright region does not have the rounded outline of a head.")
    if measures["rim_coverage"] < limits.min_rim_coverage:
        reasons.append("No skull: the region is not ringed by bright bone as a head CT slice is.")
    if measures["roughness"] > limits.max_roughness:
        reasons.append("The region is noise-like, not smooth tissue as in a CT slice.")
    return ScopeAssessment(in_scope=not reasons, reasons=reasons, **measures)
