"""The bike-rental demand service: a numpy linear model (Debian's python3-numpy) over stdlib HTTP."""
