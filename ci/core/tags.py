"""Release tags from `publish.tags` templates and the source (pure).

Templates use {sha} {short_sha} {branch} {semver} {major} {minor} {run_id}. A template
whose fields are empty yields no tag (no `sha-` on a checkout without git); branch names
are sanitised into valid tags; `{semver}` on a release tag `v1.2.3` yields 1.2.3, 1.2 and 1
(pre-releases only themselves); `latest` follows `publish.latest_on` or a release tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ci.core.config import PublishConfig
from ci.core.results import SourceInfo

TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SEMVER = re.compile(
    r"^[vV]?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+(?P<build>[0-9A-Za-z.-]+))?$"
)
_FIELD = re.compile(r"{([a-z_]+)}")


@dataclass(frozen=True)
class SemVer:
    major: str
    minor: str
    patch: str
    pre: str = ""

    @property
    def full(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + (f"-{self.pre}" if self.pre else "")


def semver(tag: str) -> SemVer | None:
    """`v1.2.3` / `1.2.3-rc.1` → SemVer; anything else → None (build metadata dropped)."""
    m = _SEMVER.match(tag.strip())
    if not m:
        return None
    return SemVer(m["major"], m["minor"], m["patch"], m["pre"] or "")


def sanitize(value: str) -> str:
    """Any text → a valid tag: invalid characters become `-`, no leading `.`/`-`, <= 128."""
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", value.strip())
    text = text.lstrip(".-")
    return text[:128].rstrip(".-") if len(text) > 128 else text


def fields(source: SourceInfo, run_id: str = "") -> dict[str, str]:
    ver = semver(source.tag) if source.tag else None
    return {
        "sha": source.sha,
        "short_sha": source.sha[:7],
        "branch": sanitize(source.branch) if source.branch else "",
        "semver": ver.full if ver else "",
        "major": ver.major if ver else "",
        "minor": ver.minor if ver else "",
        "run_id": sanitize(run_id or source.run_id),
    }


def expand(template: str, values: dict[str, str]) -> str | None:
    """One template → one tag, or None when a field it uses is empty."""
    names = _FIELD.findall(template)
    if any(not values.get(n) for n in names):
        return None
    tag = _FIELD.sub(lambda m: values[m.group(1)], template)
    tag = sanitize(tag)
    return tag if TAG_RE.match(tag) else None


def release_tags(publish: PublishConfig, source: SourceInfo, run_id: str = "") -> list[str]:
    """The tags a successful publish moves to the new index, in order, without duplicates."""
    values = fields(source, run_id)
    ver = semver(source.tag) if source.tag else None
    out: list[str] = []
    for template in publish.tags:
        tag = expand(template, values)
        if tag:
            out.append(tag)
        if template.strip() == "{semver}" and ver and not ver.pre:
            out += [f"{ver.major}.{ver.minor}", ver.major]
    if (source.branch and source.branch == publish.latest_on) or (ver and not ver.pre):
        out.append("latest")
    return list(dict.fromkeys(out))
