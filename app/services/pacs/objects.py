"""The DICOM objects stored back in the PACS, each in a new series of the analysed study.

Each says "AI generated, not for clinical use" and carries the model's name and version:

* a Secondary Capture series (highdicom ``SCImage``) of the key slices with the Grad-CAM overlay
  and the warning burned into the pixels (:func:`secondary_captures`);
* the PDF study report as an Encapsulated PDF (:func:`encapsulated_pdf`);
* a Comprehensive 3D structured report (highdicom) with the finding, the probability, the model
  and the warning (:func:`structured_report`).

Each copies the patient and study attributes of the source images, so that the PACS files it
under the same patient and study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian, generate_uid

from app.core.labels import Label
from app.services.study_record import StudyRecord

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

EVIDENCE_ATTRIBUTES = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    *PATIENT_STUDY_ATTRIBUTES,
)


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


def copy_patient_and_study(source: Dataset, target: Dataset) -> None:
    """Copy the patient and study attributes ``source`` has onto ``target``."""
    for keyword in PATIENT_STUDY_ATTRIBUTES:
        if keyword in source:
            setattr(target, keyword, source[keyword].value)


def evidence_header(source: Dataset) -> Dataset:
    """The identifying attributes of a source image, type-2 ones present even when empty."""
    header = Dataset()
    for keyword in EVIDENCE_ATTRIBUTES:
        setattr(header, keyword, source[keyword].value if keyword in source else None)
    if "SpecificCharacterSet" in source:
        header.SpecificCharacterSet = source.SpecificCharacterSet
    return header


def sop_reference(source: Dataset) -> Dataset:
    """An item that names ``source`` by its SOP class and instance UIDs (SOP Instance Reference)."""
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return reference


def secondary_captures(
    record: StudyRecord, sources: Sequence[Dataset], overlays: Mapping[int, bytes]
) -> list[Dataset]:
    """One Secondary Capture image per key slice: the overlay with the warning burned in.

    Args:
        record: the analysed study.
        sources: the retrieved instances of its analysed slices.
        overlays: the stored overlay PNG of each key slice, by slice index.
    """
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
        decoded = cv2.imdecode(np.frombuffer(overlays[index], np.uint8), cv2.IMREAD_COLOR)
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
        copy_patient_and_study(first, image)
        image.SeriesDescription = SERIES_DESCRIPTION
        image.ImageComments = f"{WARNING_TEXT}. Grad-CAM overlay of key slice {index + 1}."
        image.BurnedInAnnotation = "YES"
        image.ImageType = ["DERIVED", "SECONDARY"]
        image.DerivationDescription = f"Grad-CAM overlay by {study.model_name} {study.model_version}"
        image.ManufacturerModelName = study.model_name
        image.SoftwareVersions = study.model_version
        source = by_uid.get(item.sop_instance_uid or "")
        if source is not None:
            reference = sop_reference(source)
            image.SourceImageSequence = [reference]
            series_reference = Dataset()
            series_reference.SeriesInstanceUID = source.SeriesInstanceUID
            series_reference.ReferencedInstanceSequence = [reference]
            image.ReferencedSeriesSequence = [series_reference]
        images.append(image)
    return images


def encapsulated_pdf(record: StudyRecord, source: Dataset, pdf: bytes) -> Dataset:
    """The PDF study report (``pdf``) as an Encapsulated PDF object in a new series of the source study."""
    study = record.study
    now = datetime.now(UTC)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # A file dataset with its preamble: STOW-RS sends Part 10 files, which archives keep as sent.
    dataset = FileDataset("", Dataset(), file_meta=meta, preamble=b"\x00" * 128)
    dataset.SOPClassUID = EncapsulatedPDFStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    copy_patient_and_study(source, dataset)
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
    reference = sop_reference(source)
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


def structured_report(record: StudyRecord, sources: Sequence[Dataset]) -> Dataset:
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
        TextContentItem(name=OPERATING_POINT_CODE, value=study.operating_point, relationship_type=contains),
        NumContentItem(name=SLICES_CODE, value=study.num_slices, unit=NO_UNITS, relationship_type=contains),
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
                    record.criteria_sentence,
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
        evidence=[evidence_header(source) for source in sources],
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
