"""IAIA-BL: interpretable AI for mass-margin classification in mammography (Barnett et al. 2021).

Modules are named after the parts of the paper: ``model`` (f, g, h1, h2), ``losses`` (Eq. 3-8),
``train`` (stages A1, A2, A3, B), ``push`` (A2), ``prune``, ``metrics`` (Eq. 9, DeLong),
``explain``, ``baselines``, ``plots``, ``widgets``; ``data`` reads CBIS-DDSM and writes the
synthetic source.
"""
__version__ = "0.1.0"

__all__ = ["__version__"]   # the API is the modules above; each declares its own __all__
