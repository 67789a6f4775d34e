"""multiarch-ci: gated multi-architecture releases of ML services."""

__version__ = "0.1.0"
