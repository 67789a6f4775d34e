"""The package version (one place; `ci version` and `ci.__version__` read it)."""

__version__ = "0.1.0"
