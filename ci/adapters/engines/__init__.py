"""Engines: adapters that run platform jobs on runners (`docker`, `dagger`)."""
