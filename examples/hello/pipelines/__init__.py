"""hello's own release pipelines: `ci run NAME` runs `pipelines/NAME.py` (see README.md)."""
