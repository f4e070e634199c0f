"""The hospital PACS over DICOMweb: find a study, retrieve its CT series, analyse it, store results back.

QIDO-RS finds the study and its series, WADO-RS retrieves the largest CT series, the study
pipeline analyses it exactly as an upload, and STOW-RS stores three kinds of object back in the
same study, each in a new series and each saying "AI generated, not for clinical use":

* a Secondary Capture series (highdicom ``SCImage``) of the key slices with the Grad-CAM overlay
  and the warning burned into the pixels;
* the PDF study report as an Encapsulated PDF;
* a Comprehensive 3D structured report (highdicom) with the finding, the probability, the model
  and the warning.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid

from app.core.errors import (
    AnalysisInProgress,
    InvalidStudy,
    NotFound,
    PacsError,
    PacsUnavailable,
    ServiceError,
)
from app.core.labels import Label
from app.services.analysis import UploadFields, short_id
from app.services.claims import AnalysisKey, Claim, ClaimStore, FinishedAnalysis
from app.services.storage import STUDIES
from app.services.studies import JobAttempt, StudyRecord, StudyService, criteria_sentence, slice_file

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient

    from app.core.config import Settings

logger = logging.getLogger(__name__)

MANUFACTURER = "ICH Detect"
WARNING_TEXT = "AI generated, not for clinical use"
BURNED_WARNING = "AI GENERATED - NOT FOR CLINICAL USE"
SERIES_DESCRIPTION = "ICH Detect \u2014 AI generated, not for clinical use"
# Series numbers of the stored objects: high, so viewers list them after the acquired series.
SC_SERIES_NUMBER = 9001
PDF_SERIES_NUMBER = 9002
SR_SERIES_NUMBER = 9003
# Copied from the source images so that every object files under the same patient and study.
PATIENT_STUDY_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
ICH_CODE = Code("1386000", "SCT", "Intracranial hemorrhage")
PRESENT_CODE = Code("52101004", "SCT", "Present")
ABSENT_CODE = Code("2667000", "SCT", "Absent")
PROBABILITY_CODE = Code("ICH-P", "99ICHDETECT", "Probability of intracranial haemorrhage")
THRESHOLD_CODE = Code("ICH-T", "99ICHDETECT", "Decision threshold")
OPERATING_POINT_CODE = Code("ICH-O", "99ICHDETECT", "Operating point of the decision threshold")
SLICES_CODE = Code("ICH-N", "99ICHDETECT", "Number of slices analysed")
NO_UNITS = Code("1", "UCUM", "no units")


@dataclass(frozen=True)
class RemoteAnalysis:
    """The analysis of a PACS study; ``created`` is false when it had been analysed before."""

    record: StudyRecord
    created: bool


@dataclass(frozen=True)
class StoredSeries:
    """One series stored back in the PACS."""

    kind: str
    series_instance_uid: str
    sop_instance_uids: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "series_instance_uid": self.series_instance_uid,
            "sop_instance_uids": list(self.sop_instance_uids),
        }


def burn_in(overlay: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """The overlay with the warning on a dark band at the top and ``lines`` at the bottom."""
    image = np.ascontiguousarray(overlay.copy())
    height, width = image.shape[:2]
    scale = max(0.4, width / 900.0)
    thickness = max(1, round(scale * 2))
    band = int(32 * scale)
    bottom = height - int((12 + 26 * len(lines)) * scale)
    # Dark bands keep the text readable whatever the image is underneath.
    image[:band] = (image[:band] * 0.2).astype(np.uint8)
    if lines:
        image[bottom:] = (image[bottom:] * 0.2).astype(np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    white = (255, 255, 255)
    left = int(8 * scale)
    cv2.putText(
        image, BURNED_WARNING, (left, int(band * 0.72)), font, scale * 0.8, white, thickness, cv2.LINE_AA
    )
    for offset, text in enumerate(reversed(list(lines))):
        y = height - int((8 + offset * 26) * scale)
        cv2.putText(image, text, (left, y), font, scale * 0.6, white, thickness, cv2.LINE_AA)
    return image


def patient_orientation(source: Dataset) -> tuple[str, str]:
    """Patient Orientation (row, column directions) from a slice's ImageOrientationPatient."""
    cosines = [float(value) for value in source.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    if len(cosines) != 6:
        cosines = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]

    def letter(vector: list[float]) -> str:
        # The patient axis the direction mostly follows: +x left, +y posterior, +z head.
        axis = int(np.argmax(np.abs(vector)))
        return ("LR", "PA", "HF")[axis][0 if vector[axis] >= 0 else 1]

    return letter(cosines[:3]), letter(cosines[3:])


def _copy_patient_and_study(source: Dataset, target: Dataset) -> None:
    for keyword in PATIENT_STUDY_ATTRIBUTES:
        if keyword in source:
            setattr(target, keyword, source[keyword].value)


class PacsClient:
    """The few DICOMweb calls the service makes, with errors turned into domain errors."""

    def __init__(self, url: str, username: str | None, password: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self._client: DICOMwebClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PacsClient | None:
        if not settings.dicomweb_url:
            return None
        return cls(
            settings.dicomweb_url,
            settings.dicomweb_username,
            settings.dicomweb_password.get_secret_value(),
            settings.dicomweb_timeout_seconds,
        )

    @property
    def client(self) -> DICOMwebClient:
        if self._client is None:
            from dicomweb_client.api import DICOMwebClient
            from dicomweb_client.session_utils import create_session, create_session_from_user_pass

            session = (
                create_session_from_user_pass(self.username, self.password)
                if self.username
                else create_session()
            )
            self._client = DICOMwebClient(self.url, session=session, timeout=self.timeout)
        return self._client

    def call(self, action: str, function: Callable[[], Any]) -> Any:
        """Run one DICOMweb request; unreachable -> PacsUnavailable, refused -> PacsError."""
        import requests

        try:
            return function()
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else None
            if code == 404:
                raise NotFound(f"The PACS has nothing for {action}.") from exc
            if code in (401, 403):
                raise PacsError(
                    f"The PACS refused {action} (HTTP {code}): check ICH_DICOMWEB_USERNAME and "
                    "ICH_DICOMWEB_PASSWORD."
                ) from exc
            if code is not None and code >= 500:
                raise PacsUnavailable(f"The PACS failed {action} (HTTP {code}); try again later.") from exc
            raise PacsError(f"The PACS refused {action} (HTTP {code}).") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise PacsUnavailable(
                f"The PACS at {self.url} did not answer {action}; check that it is running and that "
                "ICH_DICOMWEB_URL is right."
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise PacsUnavailable(f"The PACS request for {action} failed: {type(exc).__name__}.") from exc

    def find_study(self, study_instance_uid: str) -> Dataset | None:
        results = self.call(
            "the study search (QIDO-RS)",
            lambda: self.client.search_for_studies(search_filters={"StudyInstanceUID": study_instance_uid}),
        )
        return Dataset.from_json(results[0]) if results else None

    def search_series(self, study_instance_uid: str) -> list[Dataset]:
        results = self.call(
            "the series search (QIDO-RS)",
            lambda: self.client.search_for_series(
                study_instance_uid, fields=["NumberOfSeriesRelatedInstances", "Modality"]
            ),
        )
        return [Dataset.from_json(item) for item in results]

    def search_studies(self, since: date | None, limit: int = 100) -> list[Dataset]:
        filters: dict[str, Any] = {"ModalitiesInStudy": "CT"}
        if since is not None:
            filters["StudyDate"] = f"{since:%Y%m%d}-"
        results = self.call(
            "the study search (QIDO-RS)",
            lambda: self.client.search_for_studies(
                search_filters=filters, limit=limit, fields=["NumberOfStudyRelatedInstances"]
            ),
        )
        return [Dataset.from_json(item) for item in results]

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Dataset]:
        return list(
            self.call(
                "the series retrieval (WADO-RS)",
                lambda: self.client.retrieve_series(study_instance_uid, series_instance_uid),
            )
        )

    def store(self, datasets: Sequence[Dataset], study_instance_uid: str) -> None:
        response = self.call(
            "storing the results (STOW-RS)",
            lambda: self.client.store_instances(list(datasets), study_instance_uid=study_instance_uid),
        )
        failed = getattr(response, "FailedSOPSequence", None) if response is not None else None
        if failed:
            raise PacsError(
                f"The PACS refused {len(failed)} of the {len(datasets)} result objects (STOW-RS)."
            )


class PacsService:
    """Analyse studies that live in the PACS and store the results back as DICOM objects."""

    def __init__(self, client: PacsClient | None, studies: StudyService, claims: ClaimStore) -> None:
        self.client = client
        self.studies = studies
        self.claims = claims

    def _require_client(self) -> PacsClient:
        if self.client is None:
            raise PacsUnavailable(
                "DICOMweb is not configured: set ICH_DICOMWEB_URL (and ICH_DICOMWEB_USERNAME and "
                "ICH_DICOMWEB_PASSWORD if the PACS needs them) and restart the service."
            )
        return self.client

    def analyse_remote_study(
        self, study_instance_uid: str, model_name: str | None = None, model_version: str | None = None
    ) -> RemoteAnalysis:
        """Find, retrieve, analyse and store back one study of the PACS, once per series and model version.

        The chosen series is claimed first (``analysis_claims``): when it is already analysed with
        this model version the stored analysis is returned (``created`` false), and while another
        worker analyses it ``AnalysisInProgress`` is raised. A claim whose study was stored but
        whose results never reached the PACS (its holder failed or died) only stores them back.

        Raises:
            PacsUnavailable: DICOMweb not configured, or the PACS did not answer.
            NotFound: the PACS has no such study.
            InvalidStudy: the study has no CT series with image slices.
            PacsError: the PACS refused a request or some of the stored objects.
            AnalysisInProgress: another worker holds the claim on this series and model version.
        """
        claimed, num_candidates = self.claim_remote_study(study_instance_uid, model_name, model_version)
        if isinstance(claimed, FinishedAnalysis):
            return RemoteAnalysis(self.studies.get(claimed.study_id), created=False)
        return self.analyse_claimed(claimed, num_candidates)

    def claim_remote_study(
        self, study_instance_uid: str, model_name: str | None = None, model_version: str | None = None
    ) -> tuple[Claim | FinishedAnalysis, int]:
        """Find a study of the PACS, choose its largest CT series and claim its analysis with the model
        version asked for; the claim (or the finished analysis) and the number of CT series.

        Raises the errors of :meth:`analyse_remote_study` but ``PacsError``.
        """
        client = self._require_client()
        if client.find_study(study_instance_uid) is None:
            raise NotFound(f"The PACS has no study with StudyInstanceUID {study_instance_uid}.")
        candidates = [
            item
            for item in client.search_series(study_instance_uid)
            if str(item.get("Modality", "")).upper() == "CT"
        ]
        if not candidates:
            raise InvalidStudy(f"The study {study_instance_uid} in the PACS has no CT series to analyse.")
        chosen = max(candidates, key=lambda item: int(item.get("NumberOfSeriesRelatedInstances", 0) or 0))
        series_uid = str(chosen.SeriesInstanceUID)
        classifier = self.studies.registry.get(model_name, model_version)
        key = AnalysisKey(study_instance_uid, series_uid, classifier.name, classifier.version)
        return self.claims.acquire(key), len(candidates)

    def analyse_claimed(
        self, claimed: Claim, num_candidates: int, job: JobAttempt | None = None
    ) -> RemoteAnalysis:
        """Analyse a claimed series (as ``job``'s study, when it is a job), store the results back,
        and mark the claim done; on any error the claim is released for a later attempt."""
        client = self._require_client()
        reference = short_id(claimed.key.study_instance_uid)
        # A study stored by an earlier holder of the claim is not analysed again, only stored back.
        created = claimed.study_id is None
        try:
            record = self._analyse_claimed(client, claimed, num_candidates, job)
        except BaseException:
            # Failed claims are taken over by the next request or poll; a lost one stays the winner's.
            claimed.release()
            raise
        claimed.finish()
        logger.info(
            "Study %s analysed from the PACS and %d series stored back",
            reference,
            len(record.details.stored_in_pacs),
        )
        return RemoteAnalysis(record, created=created)

    def _analyse_claimed(
        self, client: PacsClient, claim: Claim, num_candidates: int, job: JobAttempt | None = None
    ) -> StudyRecord:
        """Retrieve the claimed series, analyse it unless a study is already stored, store the results back."""
        key = claim.key
        logger.info(
            "Retrieving study %s series %s from the PACS",
            short_id(key.study_instance_uid),
            short_id(key.series_instance_uid),
        )
        datasets = client.retrieve_series(key.study_instance_uid, key.series_instance_uid)
        claim.heartbeat(force=True)
        if claim.study_id is None:
            files = [
                (str(dataset.get("SOPInstanceUID", index)), _to_bytes(dataset))
                for index, dataset in enumerate(datasets)
            ]
            series = self.studies.read_series(files)
            record = self.studies.create_from_series(
                series,
                UploadFields(),
                "dicomweb",
                key.model_name,
                key.model_version,
                details={"pacs_series_candidates": num_candidates},
                claim=claim,
                job=job,
            )
        else:
            record = self.studies.get(claim.study_id)
        by_uid = {str(dataset.get("SOPInstanceUID", "")): dataset for dataset in datasets}
        sources = [
            by_uid[item.sop_instance_uid or ""]
            for item in record.slices
            if (item.sop_instance_uid or "") in by_uid
        ]
        claim.heartbeat(force=True)
        try:
            stored = self.store_results(record, sources)
        except ServiceError as exc:
            exc.detail = (
                f"{exc.detail} The analysis itself was saved as study {record.study.id}; ask again to "
                "store its results back."
            )
            raise
        study = self.studies.update_details(
            record.study.id, stored_in_pacs=[item.as_dict() for item in stored]
        )
        return StudyRecord(study=study, slices=record.slices)

    def store_results(self, record: StudyRecord, sources: list[Dataset]) -> list[StoredSeries]:
        """Build the SC series, the Encapsulated PDF and the SR, and store them with one STOW-RS."""
        client = self._require_client()
        if not sources:
            raise InvalidStudy("None of the analysed slices could be matched to a retrieved instance.")
        secondary = self.secondary_captures(record, sources)
        pdf = self.encapsulated_pdf(record, sources[0])
        report = self.structured_report(record, sources)
        objects = [*secondary, pdf, report]
        client.store(objects, str(sources[0].StudyInstanceUID))
        return [
            StoredSeries(
                "secondary_capture",
                str(secondary[0].SeriesInstanceUID),
                [str(item.SOPInstanceUID) for item in secondary],
            ),
            StoredSeries("encapsulated_pdf", str(pdf.SeriesInstanceUID), [str(pdf.SOPInstanceUID)]),
            StoredSeries("structured_report", str(report.SeriesInstanceUID), [str(report.SOPInstanceUID)]),
        ]

    def secondary_captures(self, record: StudyRecord, sources: list[Dataset]) -> list[Dataset]:
        """One Secondary Capture image per key slice: the overlay with the warning burned in."""
        from highdicom.sc import SCImage

        study = record.study
        first = sources[0]
        by_uid = {str(item.SOPInstanceUID): item for item in sources}

        def source_for(uid: str | None) -> Dataset:
            return by_uid.get(uid or "", first)

        series_uid = generate_uid()
        images: list[Dataset] = []
        for number, index in enumerate(record.key_slices, start=1):
            item = record.slices[index]
            overlay_png = self.studies.files.read(study.id, slice_file("overlay", index), STUDIES)
            decoded = cv2.imdecode(np.frombuffer(overlay_png, np.uint8), cv2.IMREAD_COLOR)
            if decoded is None:
                raise ValueError(f"The stored overlay of slice {index + 1} is not a readable PNG.")
            overlay = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
            pixels = burn_in(
                overlay,
                [
                    f"Slice {index + 1}/{study.num_slices}: P(ICH) {item.probability:.1%}",
                    f"{study.model_name} {study.model_version}",
                ],
            )
            image = SCImage(
                pixel_array=pixels,
                photometric_interpretation="RGB",
                bits_allocated=8,
                coordinate_system="PATIENT",
                study_instance_uid=str(first.StudyInstanceUID),
                series_instance_uid=series_uid,
                series_number=SC_SERIES_NUMBER,
                sop_instance_uid=generate_uid(),
                instance_number=number,
                manufacturer=MANUFACTURER,
                patient_id=str(first.get("PatientID", "")) or None,
                patient_name=first.get("PatientName"),
                patient_birth_date=str(first.get("PatientBirthDate", "")) or None,
                patient_sex=str(first.get("PatientSex", "")) or None,
                accession_number=str(first.get("AccessionNumber", "")) or None,
                study_id=str(first.get("StudyID", "")) or None,
                study_date=str(first.get("StudyDate", "")) or None,
                study_time=str(first.get("StudyTime", "")) or None,
                referring_physician_name=first.get("ReferringPhysicianName"),
                patient_orientation=patient_orientation(source_for(item.sop_instance_uid)),
            )
            _copy_patient_and_study(first, image)
            image.SeriesDescription = SERIES_DESCRIPTION
            image.ImageComments = f"{WARNING_TEXT}. Grad-CAM overlay of key slice {index + 1}."
            image.BurnedInAnnotation = "YES"
            image.ImageType = ["DERIVED", "SECONDARY"]
            image.DerivationDescription = f"Grad-CAM overlay by {study.model_name} {study.model_version}"
            image.ManufacturerModelName = study.model_name
            image.SoftwareVersions = study.model_version
            source = by_uid.get(item.sop_instance_uid or "")
            if source is not None:
                reference = Dataset()
                reference.ReferencedSOPClassUID = source.SOPClassUID
                reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
                image.SourceImageSequence = [reference]
                series_reference = Dataset()
                series_reference.SeriesInstanceUID = source.SeriesInstanceUID
                series_reference.ReferencedInstanceSequence = [reference]
                image.ReferencedSeriesSequence = [series_reference]
            images.append(image)
        return images

    def encapsulated_pdf(self, record: StudyRecord, source: Dataset) -> Dataset:
        """The PDF study report as an Encapsulated PDF object in a new series of the source study."""
        study = record.study
        pdf = self.studies.read_file(study.id, "report.pdf")
        now = datetime.now(UTC)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        # A file dataset with its preamble: STOW-RS sends Part 10 files, which archives keep as sent.
        dataset = FileDataset("", Dataset(), file_meta=meta, preamble=b"\x00" * 128)
        dataset.SOPClassUID = EncapsulatedPDFStorage
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        _copy_patient_and_study(source, dataset)
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "StudyDate",
            "StudyTime",
        ):
            if keyword not in dataset:
                setattr(dataset, keyword, "")
        for keyword in ("ReferringPhysicianName", "StudyID", "AccessionNumber"):
            if keyword not in dataset:
                setattr(dataset, keyword, "")
        dataset.Modality = "DOC"
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SeriesNumber = PDF_SERIES_NUMBER
        dataset.SeriesDescription = SERIES_DESCRIPTION
        dataset.InstanceNumber = 1
        dataset.Manufacturer = MANUFACTURER
        dataset.ManufacturerModelName = study.model_name
        dataset.SoftwareVersions = study.model_version
        dataset.ConversionType = "SYN"
        dataset.ContentDate = f"{now:%Y%m%d}"
        dataset.ContentTime = f"{now:%H%M%S}"
        dataset.AcquisitionDateTime = f"{now:%Y%m%d%H%M%S}"
        dataset.BurnedInAnnotation = "YES"
        dataset.DocumentTitle = f"ICH Detect study report ({WARNING_TEXT})"
        dataset.ConceptNameCodeSequence = []
        dataset.MIMETypeOfEncapsulatedDocument = "application/pdf"
        reference = Dataset()
        reference.ReferencedSOPClassUID = source.SOPClassUID
        reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
        series_reference = Dataset()
        series_reference.SeriesInstanceUID = source.SeriesInstanceUID
        series_reference.ReferencedSOPSequence = [reference]
        study_reference = Dataset()
        study_reference.StudyInstanceUID = source.StudyInstanceUID
        study_reference.ReferencedSeriesSequence = [series_reference]
        dataset.CurrentRequestedProcedureEvidenceSequence = [study_reference]
        # The value of an OB element must have an even length.
        dataset.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
        dataset.EncapsulatedDocumentLength = len(pdf)
        return dataset

    def structured_report(self, record: StudyRecord, sources: list[Dataset]) -> Dataset:
        """A Comprehensive 3D SR: finding present or absent, probability, threshold and the operating
        point it came from, model, warning."""
        from highdicom.sr import (
            CodeContentItem,
            Comprehensive3DSR,
            ContainerContentItem,
            NumContentItem,
            RelationshipTypeValues,
            TextContentItem,
        )

        study = record.study
        contains = RelationshipTypeValues.CONTAINS
        finding = PRESENT_CODE if study.label == Label.HEMORRHAGE else ABSENT_CODE
        items = [
            CodeContentItem(name=ICH_CODE, value=finding, relationship_type=contains),
            NumContentItem(
                name=PROBABILITY_CODE,
                value=round(study.probability, 6),
                unit=NO_UNITS,
                relationship_type=contains,
            ),
            NumContentItem(
                name=THRESHOLD_CODE,
                value=round(study.threshold, 6),
                unit=NO_UNITS,
                relationship_type=contains,
            ),
            TextContentItem(
                name=OPERATING_POINT_CODE, value=study.operating_point, relationship_type=contains
            ),
            NumContentItem(
                name=SLICES_CODE, value=study.num_slices, unit=NO_UNITS, relationship_type=contains
            ),
            TextContentItem(name=codes.DCM.AlgorithmName, value=study.model_name, relationship_type=contains),
            TextContentItem(
                name=codes.DCM.AlgorithmVersion, value=study.model_version, relationship_type=contains
            ),
            TextContentItem(
                name=Code("121106", "DCM", "Comment"),
                value=" ".join(
                    part
                    for part in (
                        f"{WARNING_TEXT}. Study probability by {study.aggregation} of {study.num_slices} "
                        "slice probabilities.",
                        criteria_sentence(study),
                        "Decision support only; a radiologist must review the study.",
                    )
                    if part
                ),
                relationship_type=contains,
            ),
        ]
        content = ContainerContentItem(name=codes.DCM.ImagingMeasurementReport, template_id="1500")
        content.ContentSequence = pydicom.Sequence(items)
        report = Comprehensive3DSR(
            evidence=[_evidence_header(source) for source in sources],
            content=content,
            series_instance_uid=generate_uid(),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
        )
        report.SeriesDescription = SERIES_DESCRIPTION
        report.ManufacturerModelName = study.model_name
        report.SoftwareVersions = study.model_version
        return report


class StudyWatcher:
    """A background thread that analyses new CT studies of the PACS as they arrive.

    Every ``interval`` seconds it asks QIDO-RS for CT studies dated from ``lookback_days`` ago
    and analyses each one this service has not analysed yet; the worklist then lists them,
    haemorrhage-suspected first when asked. A modality sends a study one image at a time, so a
    study is analysed only once it has stopped growing: when its number of instances is the one
    the previous poll saw. Every worker of every replica runs one: the claims of
    ``analysis_claims`` let only one of them analyse each series.

    With the job queue, the watchers of the queue's workers take turns (``turn``: whether this
    process polls now, a lock in Redis), share what the last poll saw (``sizes``, kept in Redis),
    and queue each new study as a job (``enqueue``: the id of the new job, None when there is
    none) instead of analysing it on their own thread.
    """

    def __init__(
        self,
        pacs: PacsService,
        interval: float,
        lookback_days: int = 1,
        enqueue: Callable[[str], str | None] | None = None,
        turn: Callable[[], bool] | None = None,
        sizes: MutableMapping[str, int | None] | None = None,
    ) -> None:
        self.pacs = pacs
        self.interval = interval
        self.lookback_days = lookback_days
        self.enqueue = enqueue
        self.turn = turn
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: set[str] = set()
        # Instances each waiting study had at the last poll (None: the PACS did not say).
        self._sizes: MutableMapping[str, int | None] = {} if sizes is None else sizes

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dicomweb-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def poll_once(self) -> list[str]:
        """One poll: analyse every new study; returns the ids of the new analyses."""
        client = self.pacs._require_client()
        since = datetime.now(UTC).date() - timedelta(days=self.lookback_days)
        created = []
        for found in client.search_studies(since):
            uid = str(found.get("StudyInstanceUID", ""))
            if not uid or uid in self._failed:
                continue
            if self.pacs.studies.find_by_study_uid(uid):
                self._sizes.pop(uid, None)
                continue
            if not self.settled(uid, found.get("NumberOfStudyRelatedInstances")):
                continue
            if self._stop.is_set():
                break
            try:
                if self.enqueue is not None:
                    queued = self.enqueue(uid)
                    created.extend([queued] if queued is not None else [])
                    continue
                analysis = self.pacs.analyse_remote_study(uid)
            except AnalysisInProgress:
                # Another worker or replica has it; its result shows up on the next poll.
                logger.debug("Watcher left study %s to the worker analysing it", short_id(uid))
                continue
            except (InvalidStudy, NotFound) as exc:
                # Not analysable (no CT slices, say): remember it, so it is not fetched every poll.
                self._failed.add(uid)
                logger.warning("Watcher skipped study %s: %s", short_id(uid), exc.detail)
                continue
            if analysis.created:
                created.append(analysis.record.study.id)
        return created

    def settled(self, uid: str, instances: Any) -> bool:
        """Whether a study has stopped growing: seen at the previous poll with the same number
        of instances (or, where the PACS does not say how many, seen at the previous poll)."""
        size = int(instances) if instances not in (None, "") else None
        previous = self._sizes.get(uid, -1)
        self._sizes[uid] = size
        if previous != size:
            return False
        del self._sizes[uid]
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.turn is not None and not self.turn():
                    continue
                created = self.poll_once()
                if created:
                    logger.info("Watcher analysed %d new studies from the PACS", len(created))
            except ServiceError as exc:
                logger.warning("Watcher poll failed: %s", exc.detail)
            except Exception:
                logger.exception("Watcher poll failed unexpectedly")


EVIDENCE_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    *PATIENT_STUDY_ATTRIBUTES,
)


def _evidence_header(source: Dataset) -> Dataset:
    """The identifying attributes of a source image, type-2 ones present even when empty."""
    header = Dataset()
    for keyword in EVIDENCE_ATTRIBUTES:
        setattr(header, keyword, source[keyword].value if keyword in source else None)
    if "SpecificCharacterSet" in source:
        header.SpecificCharacterSet = source.SpecificCharacterSet
    return header


def _to_bytes(dataset: Dataset) -> bytes:
    """A retrieved dataset as Part 10 bytes, for the same reader as uploaded files."""
    buffer = io.BytesIO()
    if not hasattr(dataset, "file_meta") or "TransferSyntaxUID" not in dataset.file_meta:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.file_meta = meta
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
