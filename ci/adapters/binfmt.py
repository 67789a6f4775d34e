"""qemu binfmt_misc handlers: read what the kernel has registered, register with flag F.

Flag F makes the kernel open the interpreter at registration time, so emulation works
inside containers whose filesystem has no qemu binary (Debian's default `PF` does not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ci.adapters import proc
from ci.core import platforms
from ci.core.errors import SetupError
from ci.core.platforms import Platform

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

_ELF64_LE_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
_ELF32_LE_MASK = _ELF64_LE_MASK
# (magic, mask) by qemu arch, as in qemu's scripts/qemu-binfmt-conf.sh
MAGIC: dict[str, tuple[str, str]] = {
    "aarch64": (
        r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
        _ELF64_LE_MASK,
    ),
    "arm": (
        r"\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00",
        _ELF32_LE_MASK,
    ),
    "x86_64": (
        r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00",
        r"\xff\xff\xff\xff\xff\xfe\xfe\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
    ),
    "ppc64le": (
        r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x15\x00",
        r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\x00",
    ),
    "s390x": (
        r"\x7fELF\x02\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x16",
        r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff",
    ),
    "riscv64": (
        r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00",
        _ELF64_LE_MASK,
    ),
}


@dataclass(frozen=True)
class Handler:
    """One registered binfmt_misc entry that points at a qemu-user interpreter."""

    name: str
    interpreter: str
    flags: str
    enabled: bool
    platform: Platform | None

    @property
    def fix_binary(self) -> bool:
        return "F" in self.flags

    @property
    def usable_in_containers(self) -> bool:
        return self.enabled and self.fix_binary

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "interpreter": self.interpreter,
            "flags": self.flags,
            "enabled": self.enabled,
            "platform": str(self.platform) if self.platform else None,
            "usable_in_containers": self.usable_in_containers,
        }


def _platform_of(interpreter: str) -> Platform | None:
    name = Path(interpreter).name.removesuffix("-static").removesuffix("-binfmt")
    if not name.startswith("qemu-"):
        return None
    arch = name.removeprefix("qemu-")
    for candidate in platforms._QEMU.items():
        if candidate[1] == arch:
            return Platform("linux", candidate[0], "v7" if candidate[0] == "arm" else "")
    return None


def handlers(root: Path = BINFMT_DIR) -> list[Handler]:
    """The qemu handlers registered in `root` (empty when binfmt_misc is not mounted)."""
    out: list[Handler] = []
    if not (root / "register").exists():
        return out
    for entry in sorted(root.iterdir()):
        if entry.name in {"register", "status"}:
            continue
        try:
            lines = entry.read_text().splitlines()
        except OSError:
            continue
        info = {k: v for k, _, v in (line.partition(" ") for line in lines)}
        interp = info.get("interpreter", "")
        flags = info.get("flags:", "")
        plat = _platform_of(interp)
        if plat is None:
            continue
        out.append(Handler(entry.name, interp, flags, lines[:1] == ["enabled"], plat))
    return out


def emulated_platforms(root: Path = BINFMT_DIR) -> list[Platform]:
    """Platforms this kernel can run in containers through qemu (enabled + flag F)."""
    return [h.platform for h in handlers(root) if h.usable_in_containers and h.platform]


def interpreter_path(platform: Platform, bindir: Path = Path("/usr/bin")) -> Path:
    return bindir / f"qemu-{platform.qemu_arch}-static"


@dataclass(frozen=True)
class SetupResult:
    platform: str
    action: str  # "registered", "re-registered", "unchanged"
    interpreter: str


def setup(
    wanted: list[Platform],
    *,
    root: Path = BINFMT_DIR,
    bindir: Path = Path("/usr/bin"),
    native: Platform | None = None,
) -> list[SetupResult]:
    """Register qemu handlers with flags OCF for `wanted` platforms; idempotent."""
    native = native or platforms.host()
    targets = [p for p in wanted if not p.runs_on(native)]
    for p in targets:
        if p.qemu_arch not in MAGIC:
            raise SetupError(f"no binfmt magic known for {p}; supported: {', '.join(MAGIC)}")
        if not interpreter_path(p, bindir).exists():
            raise SetupError(
                f"{interpreter_path(p, bindir)} is missing: install qemu-user-static "
                "(apt-get install qemu-user-static)"
            )
    if os.geteuid() != 0:
        raise SetupError("ci setup-qemu must run as root (it writes to binfmt_misc)")
    if not (root / "register").exists():
        proc.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(root)], step="mount binfmt_misc")
    existing = {h.name: h for h in handlers(root)}
    results = []
    for p in targets:
        name = f"qemu-{p.qemu_arch}"
        interp = str(interpreter_path(p, bindir))
        current = existing.get(name)
        if current and current.usable_in_containers and current.interpreter == interp:
            results.append(SetupResult(str(p), "unchanged", interp))
            continue
        if current:
            (root / name).write_text("-1")
        magic, mask = MAGIC[p.qemu_arch]
        try:
            (root / "register").write_text(f":{name}:M::{magic}:{mask}:{interp}:OCF")
        except OSError as exc:
            raise SetupError(f"registering {name} failed: {exc.strerror or exc}") from None
        results.append(SetupResult(str(p), "re-registered" if current else "registered", interp))
    return results
