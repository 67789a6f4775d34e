"""OCI platforms: parse, normalise and compare `os/arch[/variant]` strings.

Normalisation follows containerd's rules so that `aarch64`, `arm64`, `linux/arm64` and
`linux/arm64/v8` are one platform, and user input fails early with a clear reason.
"""

from __future__ import annotations

import platform as _stdlib_platform
import string
from dataclasses import dataclass

from ci.core.errors import PlatformError

KNOWN_OS = frozenset({"linux", "windows", "darwin", "freebsd"})

# alias -> (arch, variant implied by the alias or None)
_ARCH_ALIASES: dict[str, tuple[str, str | None]] = {
    "amd64": ("amd64", None),
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "arm64": ("arm64", None),
    "aarch64": ("arm64", None),
    "arm": ("arm", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "armv7": ("arm", "v7"),
    "armv7l": ("arm", "v7"),
    "armv6": ("arm", "v6"),
    "armv6l": ("arm", "v6"),
    "386": ("386", None),
    "i386": ("386", None),
    "i686": ("386", None),
    "x86": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
    "mips64le": ("mips64le", None),
    "loong64": ("loong64", None),
}

_VARIANTS: dict[str, frozenset[str]] = {
    "arm": frozenset({"v5", "v6", "v7", "v8"}),
    "arm64": frozenset({"v8", "v8.1", "v8.2", "v9"}),
    "amd64": frozenset({"v1", "v2", "v3", "v4"}),
}

# the variant that equals "no variant" for an architecture
_DEFAULT_VARIANT = {"arm": "v7", "arm64": "v8", "amd64": "v1"}

# what `uname -m` prints inside a container of the platform; also the qemu binary suffix
_UNAME = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "arm": "armv7l",
    "386": "i686",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64le": "mips64",
    "loong64": "loongarch64",
}
_QEMU = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "arm": "arm",
    "386": "i386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64le": "mips64el",
    "loong64": "loongarch64",
}
# Debian's name for the architecture (dpkg --print-architecture), what base images built with
# mmdebstrap are named after; 32-bit arm splits by variant (armel = v5te, runs on v5 and v6)
_DEBIAN = {
    "amd64": "amd64",
    "arm64": "arm64",
    "386": "i386",
    "ppc64le": "ppc64el",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64le": "mips64el",
    "loong64": "loong64",
}
_DEBIAN_ARM = {"v5": "armel", "v6": "armel", "v7": "armhf", "v8": "armhf"}

# the `{field}`s an image template (build.base_image) may use; see `Platform.fields`
TEMPLATE_FIELDS = ("os", "arch", "variant", "arch_variant", "slug", "debian_arch")


@dataclass(frozen=True, order=True)
class Platform:
    """A normalised OCI platform. `str()` gives the canonical `os/arch[/variant]`."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    @property
    def slug(self) -> str:
        """A file/tag-safe name, e.g. `linux-arm-v7`."""
        return str(self).replace("/", "-")

    @property
    def uname(self) -> str:
        """What `uname -m` prints in a container of this platform."""
        return _UNAME.get(self.architecture, self.architecture)

    @property
    def qemu_arch(self) -> str:
        """The qemu-user binary suffix that emulates this platform (`qemu-<x>-static`)."""
        return _QEMU.get(self.architecture, self.architecture)

    @property
    def debian_arch(self) -> str:
        """Debian's architecture name: `armhf` for linux/arm/v7, `ppc64el` for linux/ppc64le."""
        if self.architecture == "arm":
            return _DEBIAN_ARM.get(self.variant or "v7", "armhf")
        return _DEBIAN.get(self.architecture, self.architecture)

    @property
    def arch_variant(self) -> str:
        """Architecture and variant, tag-safe: `arm-v7`, `arm64`, `amd64-v3`."""
        return f"{self.architecture}-{self.variant}" if self.variant else self.architecture

    def fields(self) -> dict[str, str]:
        """What `{field}` means in an image template for this platform (TEMPLATE_FIELDS)."""
        return {"os": self.os, "arch": self.architecture, "variant": self.variant,
                "arch_variant": self.arch_variant, "slug": self.slug,
                "debian_arch": self.debian_arch}

    def runs_on(self, native: Platform) -> bool:
        """True when a runner whose native platform is `native` runs this platform natively."""
        if (self.os, self.architecture) != (native.os, native.architecture):
            # arm64 hosts usually run 32-bit arm natively, but that is opt-in hardware
            return False
        return not self.variant or not native.variant or self.variant <= native.variant


def parse(text: str) -> Platform:
    """Parse `arch`, `os/arch` or `os/arch/variant` into a normalised Platform."""
    if not isinstance(text, str):
        raise PlatformError(f"platform must be a string, got {text!r}")
    raw = text.strip()
    parts = [p.strip().lower() for p in raw.split("/")]
    if not raw or any(not p for p in parts) or len(parts) > 3:
        raise PlatformError(f"{text!r} is not a platform (expected os/arch[/variant])")
    if len(parts) == 1:
        os_name, arch_raw, variant = "linux", parts[0], ""
    elif len(parts) == 2:
        os_name, arch_raw, variant = parts[0], parts[1], ""
    else:
        os_name, arch_raw, variant = parts
    if os_name not in KNOWN_OS:
        raise PlatformError(f"{text!r}: unknown os {os_name!r}")
    if arch_raw not in _ARCH_ALIASES:
        raise PlatformError(f"{text!r}: unknown architecture {arch_raw!r}")
    arch, implied = _ARCH_ALIASES[arch_raw]
    if not variant and implied:
        variant = implied
    if variant:
        allowed = _VARIANTS.get(arch, frozenset())
        if variant not in allowed:
            raise PlatformError(f"{text!r}: unknown variant {variant!r} for {arch}")
    if arch == "arm" and not variant:
        variant = "v7"  # containerd: bare arm means arm/v7
    if variant == _DEFAULT_VARIANT.get(arch) and arch != "arm":
        variant = ""
    return Platform(os_name, arch, variant)


def canonical(text: str) -> str:
    """`parse` for config validators: the canonical string, or ValueError (pydantic's kind)."""
    try:
        return str(parse(text))
    except PlatformError as exc:
        raise ValueError(str(exc)) from None


def parse_many(items: list[str] | tuple[str, ...]) -> list[Platform]:
    """Parse and de-duplicate, keeping first-seen order."""
    seen: dict[Platform, None] = {}
    for item in items:
        for piece in str(item).split(","):
            if piece.strip():
                seen.setdefault(parse(piece), None)
    return list(seen)


def host(machine: str | None = None) -> Platform:
    """The platform of this machine (or of a given `uname -m`)."""
    return parse(machine or _stdlib_platform.machine())


_USE = "use " + " ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS)


def template_problem(template: str) -> str | None:
    """Why `template` is not an image template (None when it is): only plain `{field}`s of
    TEMPLATE_FIELDS, so a typo fails when the config loads, not in the middle of a build."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"bad template ({exc}); {_USE}"
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            shown = f"{{{name}}}" if name else "{}"
            return f"unknown field {shown}; {_USE}"
        if spec or conversion:
            return f"field {{{name}}} takes no format spec or conversion; {_USE}"
    return None


def expand(template: str, platform: Platform) -> str:
    """An image template for one platform: `maci/python:bookworm-{debian_arch}` for
    linux/arm/v7 → `maci/python:bookworm-armhf`. PlatformError when the template is bad."""
    problem = template_problem(template)
    if problem:
        raise PlatformError(problem)
    return template.format(**platform.fields())


def from_engine(os_type: str, architecture: str) -> Platform:
    """Platform from what a daemon reports (`docker info`: OSType, Architecture)."""
    return parse(f"{os_type or 'linux'}/{architecture}")
