"""What identifies a patient in a DICOM file, and removing it (DICOM PS3.15's basic profile, the
parts that occur in mammograms). Used by :func:`.dicom.read_dicom` on every file it opens, so
nothing identifying survives the reader; prepared data sets keep no DICOM header at all."""
from __future__ import annotations

import pydicom
from pydicom.datadict import dictionary_VR, keyword_for_tag

__all__ = ["PHI_KEYWORDS", "PHI_VRS", "strip_phi"]

PHI_KEYWORDS = (
    # patient
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "PatientBirthDate",
    "PatientBirthTime", "PatientAge", "PatientSex", "PatientSize", "PatientWeight",
    "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "MilitaryRank",
    "BranchOfService", "MedicalRecordLocator", "EthnicGroup", "Occupation", "PatientReligiousPreference",
    "CountryOfResidence", "RegionOfResidence", "PatientComments", "AdditionalPatientHistory",
    "PatientInsurancePlanCodeSequence", "ResponsiblePerson", "ResponsibleOrganization",
    "MedicalAlerts", "Allergies", "PregnancyStatus", "LastMenstrualDate", "SmokingStatus",
    # study / visit
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime",
    "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "ContentDate", "ContentTime",
    "InstanceCreationDate", "InstanceCreationTime", "StudyDescription", "AdmissionID",
    "AdmittingDiagnosesDescription", "RequestAttributesSequence", "RequestingPhysician",
    "ReferencedPatientSequence", "ReferencedStudySequence",
    # people and places
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord",
    "OperatorsName", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription",
    "StationName", "DeviceSerialNumber", "PlateID", "DetectorID",
    # free text that often carries names
    "ImageComments", "DerivationDescription", "TextValue",
)
"""Keywords :func:`strip_phi` removes (DICOM PS3.15 basic profile, the parts that occur in MG)."""

PHI_VRS = ("PN", "DA", "DT", "TM")
"""Value representations removed wherever they occur: person names, dates, date-times, times."""

def _dictionary_vr(tag) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def strip_phi(ds: pydicom.Dataset) -> pydicom.Dataset:
    """Remove identifying elements from ``ds`` in place (and return it).

    Removes every keyword in :data:`PHI_KEYWORDS`, every element whose VR is in :data:`PHI_VRS`
    (names, dates, times), and all private tags, recursing into sequences. Pixel data and the
    geometry/grey-level tags are kept. Elements are inspected without decoding their values.
    """
    for tag in list(ds.keys()):
        if tag.is_private:
            del ds[tag]
            continue
        vr = getattr(ds.get_item(tag), "VR", None) or _dictionary_vr(tag)
        if keyword_for_tag(tag) in _PHI_SET or vr in PHI_VRS:
            del ds[tag]
        elif vr == "SQ":
            for item in ds[tag].value:
                strip_phi(item)
    return ds


_PHI_SET = frozenset(PHI_KEYWORDS)
