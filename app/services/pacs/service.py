"""The PACS service: find a study, retrieve its CT series, analyse it, store the results back.

QIDO-RS finds the study and its series, WADO-RS retrieves the largest CT series, the study
pipeline analyses it exactly as an upload, and STOW-RS stores the objects of :mod:`.objects`
back in the same study. The claims of ``analysis_claims`` keep one analysis per series and
model version, whichever worker or replica asks.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from app.core.errors import InvalidStudy, NotFound, PacsUnavailable, ServiceError
from app.services.analysis import UploadFields, short_id
from app.services.claims import AnalysisKey, Claim, ClaimStore, FinishedAnalysis
from app.services.pacs.client import PacsClient
from app.services.pacs.objects import encapsulated_pdf, secondary_captures, structured_report
from app.services.storage import STUDIES
from app.services.studies import JobAttempt, StudyService
from app.services.study_record import StudyRecord, slice_file

logger = logging.getLogger(__name__)


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


class PacsService:
    """Analyse studies that live in the PACS and store the results back as DICOM objects."""

    def __init__(self, client: PacsClient | None, studies: StudyService, claims: ClaimStore) -> None:
        self.client = client
        self.studies = studies
        self.claims = claims

    def require_client(self) -> PacsClient:
        """The DICOMweb client; ``PacsUnavailable`` when DICOMweb is not configured."""
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
        client = self.require_client()
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
        client = self.require_client()
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
        client = self.require_client()
        if not sources:
            raise InvalidStudy("None of the analysed slices could be matched to a retrieved instance.")
        study_id = record.study.id
        overlays = {
            index: self.studies.files.read(study_id, slice_file("overlay", index), STUDIES)
            for index in record.key_slices
        }
        secondary = secondary_captures(record, sources, overlays)
        pdf = encapsulated_pdf(record, sources[0], self.studies.read_file(study_id, "report.pdf"))
        report = structured_report(record, sources)
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
