"""Deploy manifest edits on YAML text (pure): point every reference to the image at the index digest.

Edits kustomize `images:` entries, workload containers (Deployment, StatefulSet, DaemonSet,
ReplicaSet, Job, CronJob, Pod, Argo `Rollout`) and the model-version args of Rollout analyses
and `(Cluster)AnalysisTemplate`s. Documents are parsed with ruamel.yaml's round-trip composer;
each edit is then spliced into the original text at the node's exact position, so comments,
quoting, indentation and every untouched byte survive (a GitOps diff shows only what moved).
Where a splice is not safe (flow mappings, block scalars, anchors) that one document is
re-dumped with ruamel's round-trip dumper instead. No change gives back the same text.
"""

from __future__ import annotations

import functools
import io
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, ScalarString

from ci.core.errors import ManifestError as ManifestError  # defined in the error tree; re-exported here

MODEL_ARGS = ("model-version", "model_version", "modelVersion")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_POD_SPECS: dict[str, tuple[str, ...]] = {
    **{k: ("spec", "template", "spec") for k in (
        "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Rollout")},
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}
_ANALYSES = (  # Argo Rollouts places that carry analysis `args`
    ("spec", "strategy", "canary", "analysis"),
    ("spec", "strategy", "blueGreen", "prePromotionAnalysis"),
    ("spec", "strategy", "blueGreen", "postPromotionAnalysis"),
)
_KUSTOMIZATION_FILES = {"kustomization.yaml", "kustomization.yml", "Kustomization"}


@dataclass(frozen=True)
class Target:
    """What to deploy: the image repository, the INDEX digest, a readable tag, the model version."""

    repository: str
    digest: str
    tag: str | None = None
    keep_tag: bool = True
    model_version: str | None = None
    model_args: tuple[str, ...] = MODEL_ARGS

    def __post_init__(self) -> None:
        if not DIGEST_RE.match(self.digest):
            raise ValueError(f"digest {self.digest!r} is not sha256:<64 hex>")
        if self.tag is not None and not _TAG_RE.match(self.tag):
            raise ValueError(f"tag {self.tag!r} is not a valid image tag")
        if not self.repository or "@" in self.repository or split_ref(self.repository)[1]:
            raise ValueError(f"repository {self.repository!r} must be a name without tag or digest")

    @property
    def shown_tag(self) -> str | None:
        """The tag written next to the digest (kustomize writes `name:tag@digest` when both are set)."""
        return self.tag if self.keep_tag and self.tag else None

    @property
    def image(self) -> str:
        """The full reference containers get: `repo[:tag]@sha256:...`."""
        tag = f":{self.shown_tag}" if self.shown_tag else ""
        return f"{self.repository}{tag}@{self.digest}"


@dataclass(frozen=True)
class Change:
    """One edited value: where (file, document, resource, path) and old → new (None = absent)."""

    file: str
    document: int
    resource: str
    path: str
    old: str | None
    new: str | None

    def line(self) -> str:
        return f"{self.file}: {self.resource} {self.path}: {self.old} -> {self.new}"


@dataclass(frozen=True)
class Edit:
    """The new text, its changes, and how many places refer to the image or model (changed or not)."""

    text: str
    changes: tuple[Change, ...]
    matched: int
    images: int = 0  # how many of `matched` are image references (not model-version args)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


# ---------------------------------------------------------------- image references


def split_ref(ref: str) -> tuple[str, str | None, str | None]:
    """`host:5000/a/b:tag@sha256:x` → (`host:5000/a/b`, `tag`, `sha256:x`); a port is not a tag."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def normalize_repo(name: str) -> str:
    """Docker's normalisation: `wine` ≡ `docker.io/library/wine`; registries with a port stay as is."""
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        first, rest = "docker.io", name
    if first == "index.docker.io":
        first = "docker.io"
    if first == "docker.io" and "/" not in rest:
        rest = f"library/{rest}"
    return f"{first}/{rest}"


def same_repo(a: str, b: str) -> bool:
    return normalize_repo(a) == normalize_repo(b)


def refers_to(value: str, repository: str) -> bool:
    """True when `value` is an image reference (with or without tag/digest) of `repository`."""
    return bool(value) and " " not in value and same_repo(split_ref(value)[0], repository)


# ---------------------------------------------------------------- planning (on composed nodes)


@dataclass
class _Op:
    kind: Literal["set", "add", "delete", "rename"]
    mapping: MappingNode
    path: tuple[str | int, ...]  # from the document root to `mapping`
    key: str
    value: str | None = None
    new_key: str | None = None


@dataclass
class _Doc:
    index: int
    resource: str
    file: str
    ops: list[_Op] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    matched: int = 0
    images: int = 0

    def op(self, op: _Op, old: str | None, new: str | None, where: str) -> None:
        at = len([o for o in self.ops if o.mapping.start_mark.index <= op.mapping.start_mark.index])
        self.ops.insert(at, op)  # kept in text order, so reports read top to bottom
        self.changes.insert(at, Change(self.file, self.index, self.resource, where, old, new))


def _get(node: Node | None, key: str) -> Node | None:
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and k.value == key:
                return v  # type: ignore[no-any-return]
    return None


def _at(node: Node | None, path: tuple[str, ...]) -> Node | None:
    for key in path:
        node = _get(node, key)
    return node


def _text(node: Node | None) -> str | None:
    return node.value if isinstance(node, ScalarNode) and isinstance(node.value, str) else None


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _items(node: Node | None) -> Iterator[tuple[int, MappingNode]]:
    if isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            if isinstance(item, MappingNode):
                yield i, item


def _set(doc: _Doc, m: MappingNode, path: tuple[str | int, ...], key: str, new: str) -> None:
    old = _text(_get(m, key))
    if _get(m, key) is None:
        doc.op(_Op("add", m, path, key, new), None, new, _dotted((*path, key)))
    elif old != new:
        doc.op(_Op("set", m, path, key, new), old, new, _dotted((*path, key)))


def _kustomize_images(doc: _Doc, root: MappingNode, t: Target) -> None:
    for i, entry in _items(_get(root, "images")):
        path: tuple[str | int, ...] = ("images", i)
        name, new_name = _text(_get(entry, "name")) or "", _text(_get(entry, "newName"))
        if not (same_repo(name, t.repository) or (new_name and same_repo(new_name, t.repository))):
            continue
        doc.matched += 1
        doc.images += 1
        if new_name is not None and not same_repo(new_name, t.repository):
            _set(doc, entry, path, "newName", t.repository)
        has_tag, has_digest = _get(entry, "newTag") is not None, _get(entry, "digest") is not None
        if t.shown_tag:
            _set(doc, entry, path, "newTag", t.shown_tag)
        elif has_tag and not has_digest:  # turn the stale tag line into the digest line
            old = _text(_get(entry, "newTag"))
            doc.op(_Op("rename", entry, path, "newTag", t.digest, "digest"),
                   f"newTag: {old}", f"digest: {t.digest}", _dotted((*path, "newTag")))
            continue
        elif has_tag:
            doc.op(_Op("delete", entry, path, "newTag"), _text(_get(entry, "newTag")), None,
                   _dotted((*path, "newTag")))
        _set(doc, entry, path, "digest", t.digest)


def _containers(doc: _Doc, root: MappingNode, kind: str, t: Target) -> None:
    spec_path = _POD_SPECS.get(kind)
    if spec_path is None:
        return
    spec = _at(root, spec_path)
    for group in ("initContainers", "containers"):
        for i, c in _items(_get(spec, group)):
            image = _text(_get(c, "image"))
            if image is not None and refers_to(image, t.repository):
                doc.matched += 1
                doc.images += 1
                _set(doc, c, (*spec_path, group, i), "image", t.image)


def _args(doc: _Doc, args: Node | None, path: tuple[str | int, ...], t: Target) -> None:
    for i, arg in _items(args):
        name, value = _text(_get(arg, "name")), _text(_get(arg, "value"))
        if t.model_version is not None and name in t.model_args:
            doc.matched += 1
            if _get(arg, "valueFrom") is None:
                _set(doc, arg, (*path, i), "value", t.model_version)
        elif value is not None and refers_to(value, t.repository):
            doc.matched += 1
            _set(doc, arg, (*path, i), "value", t.image)


def _analysis_args(doc: _Doc, root: MappingNode, kind: str, t: Target) -> None:
    if kind in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
        _args(doc, _at(root, ("spec", "args")), ("spec", "args"), t)
    if kind != "Rollout":
        return
    for where in _ANALYSES:
        _args(doc, _at(root, (*where, "args")), (*where, "args"), t)
    steps = ("spec", "strategy", "canary", "steps")
    for i, step in _items(_at(root, steps)):
        _args(doc, _at(step, ("analysis", "args")), (*steps, i, "analysis", "args"), t)
        for j, run in _items(_at(step, ("experiment", "analyses"))):
            _args(doc, _get(run, "args"), (*steps, i, "experiment", "analyses", j, "args"), t)


def _plan(root: Node | None, index: int, file: str, t: Target) -> _Doc:
    if not isinstance(root, MappingNode):
        return _Doc(index, "", file)
    kind = _text(_get(root, "kind")) or ""
    api = _text(_get(root, "apiVersion")) or ""
    name = _text(_at(root, ("metadata", "name"))) or ""
    doc = _Doc(index, f"{kind or 'Kustomization'}/{name}" if name else kind or "Kustomization", file)
    base = file.replace("\\", "/").rsplit("/", 1)[-1]
    if kind == "Kustomization" or api.startswith("kustomize.config.k8s.io") or (
        not kind and base in _KUSTOMIZATION_FILES
    ):
        _kustomize_images(doc, root, t)
    _containers(doc, root, kind, t)
    _analysis_args(doc, root, kind, t)
    return doc


# ---------------------------------------------------------------- applying: splice, else re-dump

_MARKER = re.compile(r"---\s*(#.*)?$")
_PLAIN_OK = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./:@+=-]*$")


@functools.lru_cache(maxsize=256)
def _is_plain(value: str) -> bool:
    """Whether `value` unquoted reads back as this string in YAML 1.2 AND 1.1 (`7`, `on`, `1:20` do not)."""
    if not _PLAIN_OK.match(value) or value.endswith(":"):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for version in ((1, 1), (1, 2)):  # Kubernetes' Go YAML still resolves like 1.1
            yaml = YAML(typ="safe", pure=True)
            yaml.version = version
            try:
                if yaml.load(value) != value:
                    return False
            except YAMLError:
                return False
    return True


def _render(value: str, style: str | None) -> str:
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    if style is None and _is_plain(value):
        return value
    return json.dumps(value)


def _line_end(text: str, index: int) -> int:
    nl = text.find("\n", index)
    return len(text) if nl < 0 else nl + 1


def _scalar_span(text: str, node: Node) -> tuple[int, int] | None:
    """The exact span of a one-line plain/quoted scalar (not an anchor, tag or block scalar)."""
    if not isinstance(node, ScalarNode) or node.style not in (None, "'", '"'):
        return None
    start, end = node.start_mark.index, node.end_mark.index
    if node.start_mark.line != node.end_mark.line:
        return None
    raw = text[start:end]
    if node.style is None and raw == node.value:
        return start, end
    if node.style and raw[:1] == node.style and raw[-1:] == node.style and len(raw) >= 2:
        return start, end
    return None


def _splice(text: str, op: _Op) -> list[tuple[int, int, str]] | None:
    m = op.mapping
    if m.flow_style:
        return None
    pairs = {k.value: (k, v) for k, v in m.value if isinstance(k, ScalarNode)}
    if op.kind in ("set", "rename"):
        k, v = pairs[op.key]
        span = _scalar_span(text, v)
        if span is None or op.value is None:
            return None
        edits = [(span[0], span[1], _render(op.value, v.style))]
        if op.kind == "rename":
            kspan = _scalar_span(text, k)
            if kspan is None or op.new_key is None:
                return None
            edits.append((kspan[0], kspan[1], op.new_key))
        return edits
    if op.kind == "delete":
        k, v = pairs[op.key]
        line_start = text.rfind("\n", 0, k.start_mark.index) + 1
        if text[line_start : k.start_mark.index].strip() or _scalar_span(text, v) is None:
            return None  # `- newTag: x` opens a sequence item: let ruamel handle it
        return [(line_start, _line_end(text, v.end_mark.index), "")]
    anchors = [(k, v) for k, v in m.value if _scalar_span(text, v) and k.start_mark.line == v.end_mark.line]
    if not anchors or op.value is None:
        return None
    k, v = anchors[-1]
    at, eol = _line_end(text, v.end_mark.index), "\r\n" if "\r\n" in text else "\n"
    line = f"{' ' * m.value[0][0].start_mark.column}{op.key}: {_render(op.value, None)}"
    return [(at, at, f"{line}{eol}" if text[at - 1 : at] == "\n" else f"{eol}{line}")]


def _chunks(text: str) -> list[tuple[int, int]]:
    """Spans of the documents' text: a `---` line at column 0 always starts a new document."""
    spans, start, pos, has_content = [], 0, 0, False
    for line in text.splitlines(keepends=True):
        if re.match(r"---(\s|$)", line) and has_content:
            spans.append((start, pos))
            start, has_content = pos, False
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "%", "...")) and not _MARKER.match(stripped):
            has_content = True
        pos += len(line)
    spans.append((start, len(text)))
    return spans


def _rt() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def _navigate(data: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _styled(value: str, old: Any) -> Any:
    if isinstance(old, ScalarString):
        return type(old)(value)
    return value if _is_plain(value) else DoubleQuotedScalarString(value)


def _redump(chunk: str, ops: list[tuple[int, _Op]]) -> str:
    """Apply `ops` with ruamel's round-trip loader/dumper to one chunk, keeping its header lines."""
    lines = chunk.splitlines(keepends=True)
    head = 0
    while head < len(lines) and (
        not lines[head].strip() or lines[head].lstrip().startswith(("#", "%"))
        or _MARKER.match(lines[head].strip())
    ):
        head += 1
    header, body = "".join(lines[:head]), "".join(lines[head:])
    yaml = _rt()
    yaml.indent(**_guess_indent(body))
    docs = list(yaml.load_all(body))
    for index, op in ops:
        m = _navigate(docs[index], op.path)
        if op.kind == "set":
            m[op.key] = _styled(op.value or "", m.get(op.key))
        elif op.kind == "add":
            m[op.key] = _styled(op.value or "", None)
        elif op.kind == "delete":
            del m[op.key]
        elif op.new_key is not None:  # rename
            pos = list(m).index(op.key)
            m.insert(pos, op.new_key, _styled(op.value or "", m.get(op.key)))
            if op.key in m.ca.items:
                m.ca.items[op.new_key] = m.ca.items.pop(op.key)
            del m[op.key]
    out = io.StringIO()
    yaml.dump_all(docs, out)
    return header + out.getvalue()


def _guess_indent(text: str) -> dict[str, int]:
    """Mapping indent and sequence dash offset as used in `text` (default 2 and 0)."""
    mapping, offset, prev_indent, prev_opens = 0, -1, 0, False
    for line in text.splitlines():
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if prev_opens and indent > prev_indent:
            if stripped.startswith("- ") and offset < 0:
                offset = indent - prev_indent
            elif not stripped.startswith("- ") and not mapping:
                mapping = indent - prev_indent
        prev_indent, prev_opens = indent, stripped.rstrip().endswith(":")
    mapping, offset = mapping or 2, max(offset, 0)
    return {"mapping": mapping, "sequence": offset + 2, "offset": offset}


def update_manifest(text: str, target: Target, *, file: str = "") -> Edit:
    """Point every reference to `target.repository` in `text` at the digest; same text if nothing moves."""
    out: list[str] = []
    changes: list[Change] = []
    matched, images, index = 0, 0, 0
    for start, end in _chunks(text):
        chunk = text[start:end]
        try:
            roots = list(_rt().compose_all(chunk))
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" (line {mark.line + 1 + text.count(chr(10), 0, start)})" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ManifestError(f"{file or '<manifest>'}: not valid YAML{line}: {problem}") from None
        planned = [_plan(root, index + i, file, target) for i, root in enumerate(roots)]
        index += len(roots)
        ops = [(i, op) for i, doc in enumerate(planned) for op in doc.ops]
        matched += sum(doc.matched for doc in planned)
        images += sum(doc.images for doc in planned)
        changes += [c for doc in planned for c in doc.changes]
        if not ops:
            out.append(chunk)
            continue
        edits = [_splice(chunk, op) for _, op in ops]
        if any(e is None for e in edits):
            out.append(_redump(chunk, ops))
            continue
        flat = list(dict.fromkeys(e for group in edits if group for e in group))  # aliases: once
        # Right to left; at one position later ops go first so earlier ops end up first.
        for a, b, new in sorted(reversed(flat), key=lambda e: e[0], reverse=True):
            chunk = chunk[:a] + new + chunk[b:]
        out.append(chunk)
    return Edit("".join(out) if changes else text, tuple(changes), matched, images)
