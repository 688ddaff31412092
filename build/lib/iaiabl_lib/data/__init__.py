"""Data: DICOM reading, CBIS-DDSM import, prepared-dataset I/O and batching."""
