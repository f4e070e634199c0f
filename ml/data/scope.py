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
        head_threshold: intensity (0..1) above which a pixel can belong to the head, as in
            :func:`ml.data.preprocessing.head_mask` (the same default as preprocessing).
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
    head_threshold: float = 0.08


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
    if np.issubdtype(array.dtype, np.integer) and _channels_equal(array):
        # Grey saved as colour: both opponent channels are zero everywhere.
        return 0.0
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


def _channels_equal(array: np.ndarray) -> bool:
    """Whether the first three channels of an H x W x C image hold the same values."""
    # A sample of rows first: a colour image almost always differs there already.
    for rows in (array[::16], array):
        first = rows[:, :, 0]
        if not (np.array_equal(first, rows[:, :, 1]) and np.array_equal(first, rows[:, :, 2])):
            return False
    return True


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


def _centre(mask: np.ndarray) -> tuple[float, float]:
    """Row and column of the mask's centroid (the mean of its pixels' coordinates)."""
    height, width = mask.shape
    row_counts = np.count_nonzero(mask, axis=1)
    col_counts = np.count_nonzero(mask, axis=0)
    total = int(row_counts.sum())
    # Integer sums are exact, so this equals the mean of the coordinates of np.nonzero(mask).
    row_sum = int(np.dot(np.arange(height, dtype=np.int64), row_counts))
    col_sum = int(np.dot(np.arange(width, dtype=np.int64), col_counts))
    return float(row_sum) / total, float(col_sum) / total


def _rim_coverage(gray: np.ndarray, mask: np.ndarray, rays: int, depth: float, bright: float) -> float:
    """Share of directions in which the head's outer band reaches the bright (bone) level.

    Every ray starts at the head's centroid and is sampled every half pixel. Along each ray the
    outline is its last head pixel; the band is the last ``depth`` of the way from the centre to
    the outline (at least two samples), and the direction counts when the band's brightest
    sample reaches ``bright``. All rays are sampled at once.
    """
    centre_row, centre_col = _centre(mask)
    height, width = mask.shape
    reach = float(np.hypot(height, width))
    steps = np.arange(0.0, reach, 0.5)
    # Beyond the farthest corner (plus rounding) every sample lies outside the image.
    corner = float(
        np.hypot(max(centre_row, height - 1 - centre_row), max(centre_col, width - 1 - centre_col))
    )
    steps = steps[: int(np.searchsorted(steps, corner + 1.0, side="right")) + 1]
    angles = np.linspace(0.0, 2.0 * np.pi, rays, endpoint=False)[:, np.newaxis]
    ray_rows = np.round(centre_row + steps * np.sin(angles)).astype(np.intp)
    ray_cols = np.round(centre_col + steps * np.cos(angles)).astype(np.intp)
    valid = (ray_rows >= 0) & (ray_rows < height) & (ray_cols >= 0) & (ray_cols < width)
    flat = np.where(valid, ray_rows * width + ray_cols, 0)
    inside = mask.ravel()[flat] & valid
    reaches_head = inside.any(axis=1)
    outline = steps.size - 1 - np.argmax(inside[:, ::-1], axis=1)
    start = np.maximum(np.trunc(outline - np.maximum(2.0, depth * outline)).astype(np.intp), 0)
    sample = np.arange(steps.size)
    band = (sample >= start[:, np.newaxis]) & (sample <= outline[:, np.newaxis])
    peaks = np.where(band, gray.ravel()[flat], -np.inf).max(axis=1).astype(np.float64)
    return int(np.count_nonzero(reaches_head & (peaks >= bright))) / rays


def _median(values: np.ndarray) -> Any:
    """``np.median`` of a non-empty 1-D array without NaNs (same value and dtype), by one partition."""
    middle = values.size // 2
    part = np.partition(values, middle)
    if values.size % 2:
        return part[middle]
    # The lower middle value is the largest of those the partition put before the upper one.
    return np.mean(np.array([part[:middle].max(), part[middle]], dtype=values.dtype))


def _roughness(gray: np.ndarray, mask: np.ndarray, low: float, high: float) -> float:
    """Median high-frequency residual inside the head, relative to its 5-95 % intensity range."""
    smooth = cv2.GaussianBlur(gray, (5, 5), 1.5)
    residual = np.abs(gray - smooth)[mask]
    return float(_median(residual) / max(float(high - low), 1e-3))


def assess_scope(
    image: np.ndarray,
    colourfulness_value: float | None = None,
    modality: str | None = None,
    thresholds: ScopeThresholds | None = None,
    mask: np.ndarray | None = None,
) -> ScopeAssessment:
    """Decide whether ``image`` looks like a brain-window head CT slice.

    Args:
        image: the decoded image: 2-D grey (uint8 or [0, 1] float) or colour (H x W x 3/4).
        colourfulness_value: the colourfulness of the original decoded image when ``image``
            is already grey (the decoder converts colour to grey and keeps this number);
            measured from ``image`` when omitted.
        modality: the DICOM Modality, when the image came from DICOM.
        thresholds: limits; :class:`ScopeThresholds` defaults when omitted.
        mask: the head mask of ``image`` as :func:`ml.data.preprocessing.head_mask` returns it
            at ``thresholds.head_threshold``, when preprocessing has already computed it (a
            boolean array of the image's height and width); computed here when omitted.

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
    if mask is None:
        mask = head_mask(gray, limits.head_threshold)
    elif mask.shape != gray.shape or mask.dtype != np.bool_:
        raise ValueError(
            f"The head mask must be a boolean array of the image's shape {gray.shape}; got "
            f"{mask.dtype} {mask.shape}."
        )
    head_fraction = 0.0 if mask is None else float(mask.mean())
    if mask is None or head_fraction < limits.min_head_fraction:
        reasons.append("No head-shaped region was found in the image.")
        return ScopeAssessment(in_scope=False, reasons=reasons, **measures)
    low, high, top = np.percentile(gray[mask], [5.0, 95.0, 99.0])
    measures.update(
        head_fraction=head_fraction,
        ellipse_fit=_ellipse_fit(mask),
        edge_contact=_edge_contact(mask),
        rim_coverage=_rim_coverage(gray, mask, limits.rays, limits.rim_depth, max(0.45, float(top) - 0.15)),
        roughness=_roughness(gray, mask, low, high),
    )
    if measures["ellipse_fit"] < limits.min_ellipse_fit or measures["edge_contact"] > limits.max_edge_contact:
        reasons.append("The bright region does not have the rounded outline of a head.")
    if measures["rim_coverage"] < limits.min_rim_coverage:
        reasons.append("No skull: the region is not ringed by bright bone as a head CT slice is.")
    if measures["roughness"] > limits.max_roughness:
        reasons.append("The region is noise-like, not smooth tissue as in a CT slice.")
    return ScopeAssessment(in_scope=not reasons, reasons=reasons, **measures)
