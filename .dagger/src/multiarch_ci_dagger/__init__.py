"""multiarch-ci as a Dagger module: plan, one platform job, and the whole release.

The Python runtime loads the main object through the `dagger.mod` entry point in
pyproject.toml (`multiarch_ci_dagger:MultiarchCi`); the class name is what the engine
derives from the module name `multiarch-ci` in dagger.json.
"""

from multiarch_ci_dagger.main import MultiarchCi

__all__ = ["MultiarchCi"]
