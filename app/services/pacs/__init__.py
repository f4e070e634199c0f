"""The hospital PACS over DICOMweb: find a study, retrieve its CT series, analyse it, store results back.

| module | what |
| --- | --- |
| :mod:`.client` | the DICOMweb calls (QIDO-RS, WADO-RS, STOW-RS), errors turned into domain errors |
| :mod:`.service` | the PACS service: claim a study's series, retrieve, analyse, store the results back |
| :mod:`.objects` | the DICOM objects stored back: Secondary Capture, Encapsulated PDF, Comprehensive 3D SR |
| :mod:`.watcher` | the background thread that analyses (or queues) new CT studies as they arrive |
"""

from app.services.pacs.client import PacsClient
from app.services.pacs.objects import (
    SERIES_DESCRIPTION,
    WARNING_TEXT,
    burn_in,
    encapsulated_pdf,
    patient_orientation,
    secondary_captures,
    structured_report,
)
from app.services.pacs.service import PacsService, RemoteAnalysis, StoredSeries
from app.services.pacs.watcher import StudyWatcher

__all__ = [
    "SERIES_DESCRIPTION",
    "WARNING_TEXT",
    "PacsClient",
    "PacsService",
    "RemoteAnalysis",
    "StoredSeries",
    "StudyWatcher",
    "burn_in",
    "encapsulated_pdf",
    "patient_orientation",
    "secondary_captures",
    "structured_report",
]
