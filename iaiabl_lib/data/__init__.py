"""Data: DICOM reading, CBIS-DDSM import, prepared-dataset I/O and batching."""

__all__: list[str] = []   # the API is the modules: dicom, cbis_ddsm, prepared_dir, locate, idc, dataset, synthetic
