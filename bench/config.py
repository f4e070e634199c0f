"""What the benchmark measures and how often: :class:`BenchConfig`, checked when it is made."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from app.core.config import Settings

__all__ = ["DEFAULT_MODEL", "BenchConfig", "default_data_dir"]

# The model the service answers with when a request names none.
DEFAULT_MODEL: str = Settings.model_fields["default_model"].default


def default_data_dir() -> Path:
    """``ICH_DATA_DIR`` when set, else ``../shared/datasets`` beside the repository."""
    return Path(os.environ.get("ICH_DATA_DIR", "../shared/datasets"))


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how often.

    Attributes:
        model_store: folder of model bundles; the newest version of ``model_name`` is measured.
        data_dir: root of the real datasets (``head_ct``, ``rsna_dicom``).
        output: where the JSON results go.
        model_name: the model to measure (the service's default model).
        requests: sequential single-slice requests through the API, for each of the two paths.
        warmup: untimed runs before every timed measurement.
        single_repeats: in-process single-slice analyses.
        series_slices: slices in the DICOM series.
        series_repeats: timed optimised (and floor) passes over the series.
        naive_repeats: timed naive passes over the series (slow, so fewer).
        pdf_reports: distinct predictions whose PDF report is generated on first request.
        concurrency: numbers of concurrent clients for the throughput runs.
        requests_per_client: requests each concurrent client sends.
        memory_requests: requests the server has answered when its memory is read the second time.
        start_runs: server starts timed from process launch to a ready /readyz.
        study_repeats: timed uploads of the series to the study endpoint, where it exists.
        skip_http: measure in-process only.
        quick: small counts for a smoke run; the figures are not meaningful.
    """

    model_store: Path = Path("model_store")
    data_dir: Path = field(default_factory=default_data_dir)
    output: Path = Path("artifacts/bench/results.json")
    model_name: str = DEFAULT_MODEL
    requests: int = 100
    warmup: int = 5
    single_repeats: int = 50
    series_slices: int = 40
    series_repeats: int = 7
    naive_repeats: int = 3
    pdf_reports: int = 10
    concurrency: tuple[int, ...] = (1, 4, 8)
    requests_per_client: int = 16
    memory_requests: int = 500
    start_runs: int = 3
    study_repeats: int = 3
    skip_http: bool = False
    quick: bool = False

    def __post_init__(self) -> None:
        for name in ("requests", "single_repeats", "series_slices", "series_repeats", "naive_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if self.warmup < 0 or self.pdf_reports < 0 or self.requests_per_client < 1 or self.start_runs < 1:
            raise ValueError(
                "warmup and pdf_reports must be >= 0, requests_per_client and start_runs >= 1; got "
                f"{self.warmup}, {self.pdf_reports}, {self.requests_per_client}, {self.start_runs}."
            )
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"concurrency needs positive client counts, got {self.concurrency}.")

    def as_quick(self) -> BenchConfig:
        """The same settings with the small counts of a smoke run (memory read after ``requests``)."""
        return replace(
            self,
            warmup=min(self.warmup, 2),
            single_repeats=3,
            series_slices=min(self.series_slices, 8),
            series_repeats=2,
            naive_repeats=1,
            pdf_reports=min(self.pdf_reports, 2),
            requests_per_client=2,
            memory_requests=self.requests,
            start_runs=1,
            study_repeats=1,
            quick=True,
        )

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return {key: str(value) if isinstance(value, Path) else value for key, value in values.items()}
