"""Every `ci …` command line the project documents or runs, found in its CI files and docs, and
checked against the real Typer app without running it: a renamed option or a forgotten required
argument in a workflow or README then fails a unit test instead of a release.

Extraction is a small shell reader, not a shell: enough of quoting, `$(…)`, `${VAR:+…}`,
continuations, heredocs, redirections and `;`/`&&`/`||`/`|`/`&` to find the words of each simple
command. Expansions whose value is unknown become the placeholder `X`.
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import typer.main
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = "X"
UNPARSEABLE = "<unparseable>"
_DROP = "\x00drop\x00"  # "$@" and "$*": no words at all, not one empty word
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!-]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_HEREDOC = re.compile(r"<<-?[ \t]*(['\"]?)([A-Za-z0-9_]+)\1")
_FD = re.compile(r"[0-9]+(?=[<>])")
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")
_SHELL_LANGS = {"", "sh", "bash", "shell", "console", "zsh", "shell-session"}
# Scripts that hand their arguments to a `ci` command line (checked by a test against the script).
WRAPPERS: dict[str, tuple[str, ...]] = {"scripts/example.sh": ("run", "release")}
_KEYWORDS = {"if", "then", "else", "elif", "do", "while", "until", "!", "time", "exec", "nohup"}


@dataclass(frozen=True)
class Invocation:
    """One `ci` command line: where it is, its text, and the arguments after `ci`."""

    source: str
    line: int
    text: str
    argv: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.source}:{self.line}:{self.argv[0] if self.argv else 'ci'}"


# --- the check ------------------------------------------------------------------------------


@functools.cache
def _group() -> Any:
    from ci.cli import app

    return typer.main.get_command(app)


def check(argv: Sequence[str]) -> str | None:
    """Parse `ci ARGV` with the real app, executing nothing; the usage error, or None if it parses.

    The group is not asked to parse (it defers the subcommand, and with no arguments prints help),
    and `--help` is not handed to click (eager: it would print and exit).
    """
    group = _group()
    root = typer.Context(group, info_name="ci")
    if not argv:
        return None  # `ci` alone prints the help
    head, *rest = argv
    if head.startswith("-"):
        if head in root.help_option_names and not rest:
            return None
        return f"No such option or misplaced: {head} (the group takes only --help)"
    command = group.get_command(root, head)
    if command is None:
        return f"No such command {head!r}"
    before_dashes = rest[: rest.index("--")] if "--" in rest else rest
    if any(word in root.help_option_names for word in before_dashes):
        return None
    try:
        command.make_context(head, list(rest), parent=root)
    except typer.TyperException as exc:  # the vendored click's UsageError family
        fmt = getattr(exc, "format_message", None)
        return str(fmt() if fmt else exc)
    return None


def problem(inv: Invocation) -> str | None:
    """`file:line: command: error` for an invocation that does not parse, else None."""
    if inv.argv[:1] == (UNPARSEABLE,):
        return f"{inv.source}:{inv.line}: {inv.text}\n  -> cannot split into words: {inv.argv[1]}"
    error = check(inv.argv)
    return None if error is None else f"{inv.source}:{inv.line}: {inv.text}\n  -> {error}"


# --- shell text -> simple commands ----------------------------------------------------------


class _Scanner:
    """Splits shell text into logical lines (one per unquoted newline), with continuations
    joined, comments and heredoc bodies dropped, and expansions replaced; each `$(…)` or
    backquoted command becomes logical lines of its own."""

    def __init__(self, text: str, line: int) -> None:
        self.s, self.i, self.line = text, 0, line
        self.found: list[tuple[int, str, str]] = []  # (line, expanded text, original text)

    def commands(self, close: str | None = None) -> None:
        buf: list[str] = []
        start, begin, depth, quoted = self.line, self.i, 0, False
        heredocs: list[str] = []
        while self.i < len(self.s):
            c = self.s[self.i]
            if not quoted and c == ")" and close == ")" and depth == 0:
                self._emit(start, buf, begin, self.i)
                self.i += 1
                return
            if not quoted and c == "\n":
                self._emit(start, buf, begin, self.i)
                self.i += 1
                self.line += 1
                for delim in heredocs:
                    self._skip_heredoc(delim)
                buf, heredocs, start, begin = [], [], self.line, self.i
                continue
            at_word = not buf or buf[-1][-1:] in ("", " ", "\t", ";", "&", "|", "(")
            if not quoted and c == "#" and at_word:
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
                continue
            if not quoted and at_word and (m := _FD.match(self.s, self.i)):
                self.i = m.end()  # `2>&1`, `2>/dev/null`: the fd number is no argument
                continue
            if not quoted and (m := _HEREDOC.match(self.s, self.i)):
                heredocs.append(m.group(2))
                buf.append(f"<< {m.group(2)} ")
                self.i = m.end()
                continue
            if not quoted and c in "()":
                depth += 1 if c == "(" else -1
            if c == '"':
                quoted = not quoted
            buf.append(self._piece(quoted))
        self._emit(start, buf, begin, self.i)

    def _emit(self, line: int, buf: list[str], begin: int, end: int) -> None:
        text = "".join(buf).strip()
        if text:
            original = " ".join(self.s[begin:end].replace("\\\n", " ").split())
            self.found.append((line, text, original))

    def _skip_heredoc(self, delim: str) -> None:
        while self.i < len(self.s):
            end = self.s.find("\n", self.i)
            end = len(self.s) if end < 0 else end
            body_line = self.s[self.i:end]
            self.i = min(end + 1, len(self.s))
            self.line += 1
            if body_line.strip() == delim:
                return

    def _piece(self, quoted: bool) -> str:
        """The next character or construct, expanded."""
        s, i = self.s, self.i
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            self.i += 2
            if s[i + 1] == "\n":
                self.line += 1
                return " "
            return s[i:i + 2]
        if c == "'" and not quoted:
            end = s.find("'", i + 1)
            end = len(s) - 1 if end < 0 else end
            self.line += s.count("\n", i, end)
            self.i = end + 1
            return s[i:end + 1]
        if c == "`":
            end = s.find("`", i + 1)
            end = len(s) - 1 if end < 0 else end
            self._nested(s[i + 1:end])
            self.i = end + 1
            return PLACEHOLDER
        if c == "$":
            return self._dollar(quoted)
        self.i += 1
        if c == "\n":
            self.line += 1
        return c

    def _dollar(self, quoted: bool) -> str:
        s, i = self.s, self.i
        nxt = s[i + 1:i + 2]
        if nxt == "'" and not quoted:  # $'…' (ANSI-C quoting): a quoted word
            self.i += 1
            return self._piece(quoted)
        if s.startswith("$((", i):
            self.i = self._match(i + 3, "(", ")", 2)
            return PLACEHOLDER
        if nxt == "(":
            inner = _Scanner(s, self.line)
            inner.i = i + 2
            inner.commands(close=")")
            self.i, self.line = inner.i, inner.line
            body = s[i + 2:self.i - 1].strip()
            if body in ("command -v ci", "which ci"):
                return "ci"  # `"$(command -v ci)" ARGS` runs ci itself
            self.found.extend(inner.found)
            return PLACEHOLDER
        if s.startswith("$[[", i):  # GitLab's $[[ inputs.x ]]
            end = s.find("]]", i)
            self.i = len(s) if end < 0 else end + 2
            return PLACEHOLDER
        if nxt == "{":
            if s.startswith("${{", i):  # GitHub's ${{ expression }}
                end = s.find("}}", i)
                self.i = len(s) if end < 0 else end + 2
                return PLACEHOLDER
            m = _NAME.match(s, i + 2)
            self.i = m.end() if m else i + 2
            alternative = s.startswith(":+", self.i) or s.startswith("+", self.i)
            if alternative:
                self.i += 2 if s[self.i] == ":" else 1
            words = self._word_until_brace()
            if alternative:
                return words  # ${VAR:+WORDS}: the conditional words must parse too
            return _DROP if m and m.group() in "@*" else PLACEHOLDER
        m = _NAME.match(s, i + 1)
        if m is None:
            self.i += 1
            return "$"
        self.i = i + 2 if m.group()[0].isdigit() else m.end()  # $10 is $1 then 0
        return _DROP if m.group() in ("@", "*") else PLACEHOLDER

    def _word_until_brace(self) -> str:
        """The expanded text up to the `}` closing a `${…}`."""
        out: list[str] = []
        quoted = False
        while self.i < len(self.s):
            c = self.s[self.i]
            if c == "}" and not quoted:
                self.i += 1
                break
            if c == '"':
                quoted = not quoted
            out.append(self._piece(quoted))
        return "".join(out)

    def _match(self, i: int, opening: str, closing: str, depth: int) -> int:
        while i < len(self.s) and depth:
            depth += (self.s[i] == opening) - (self.s[i] == closing)
            if self.s[i] == "\n":
                self.line += 1
            i += 1
        return i

    def _nested(self, text: str) -> None:
        inner = _Scanner(text, self.line)
        inner.commands()
        self.found.extend(inner.found)
        self.line += text.count("\n")


def simple_commands(text: str) -> list[list[str]]:
    """The words of each simple command on one expanded logical line (redirections removed)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    commands: list[list[str]] = [[]]
    tokens = iter(lexer)
    for token in tokens:
        if token and set(token) <= set(";&|()"):
            commands.append([])
        elif token and set(token) <= set("<>&|") and set(token) & set("<>"):
            next(tokens, None)  # the redirection's target
        elif token in ("{", "}"):
            commands.append([])
        elif token != _DROP:
            commands[-1].append(token)
    return [c for c in commands if c]


def ci_argv(words: Sequence[str]) -> tuple[str, ...] | None:
    """The arguments after `ci` if these words run `ci` (directly or through a known wrapper)."""
    words = list(words)
    while words:
        head = words[0]
        if _ASSIGNMENT.match(head) or head in _KEYWORDS:
            words = words[1:]
        elif head in ("sudo", "env", "command"):
            if head == "command" and words[1:2] and words[1].startswith("-"):
                return None  # `command -v ci` asks where ci is
            words = words[1:]
            while words and (words[0].startswith("-") or _ASSIGNMENT.match(words[0])):
                words = words[1:]
        else:
            break
    if not words:
        return None
    head, rest = words[0], words[1:]
    base = head.rsplit("/", 1)[-1]
    if base == "ci":
        return tuple(rest)
    if _PYTHON.fullmatch(base):
        while rest and rest[0].startswith("-") and rest[0] != "-m":
            rest = rest[1:]
        if len(rest) >= 2 and rest[0] == "-m":
            if rest[1] == "ci":
                return tuple(rest[2:])
            if rest[1].startswith("pipelines."):  # run_main: `ci run release` with its argv
                return ("run", "release", *rest[2:])
        return None
    if base == "dagger" and rest[:1] == ["run"]:
        rest = rest[1:]
        while rest and rest[0].startswith("-"):
            rest = rest[1:]
        return ci_argv(rest)
    if base in ("bash", "sh") and rest and not rest[0].startswith("-"):
        return ci_argv(rest)
    for script, prefix in WRAPPERS.items():
        if head == script or head.endswith("/" + script) or head == "./" + script:
            return (*prefix, *rest)
    return None


def from_shell(text: str, source: str, first_line: int = 1) -> list[Invocation]:
    """Every `ci` invocation in shell text whose first line is `first_line` of `source`."""
    scanner = _Scanner(text, first_line)
    scanner.commands()
    found: list[Invocation] = []
    for line, expanded, original in sorted(scanner.found, key=lambda f: f[0]):
        try:
            commands = simple_commands(expanded)
        except ValueError as exc:  # unbalanced quotes: say so if it looks like a ci line
            if re.search(r"(^|[\s;&|(/])ci\s", expanded):
                found.append(Invocation(source, line, original, (UNPARSEABLE, str(exc))))
            continue
        for words in commands:
            argv = ci_argv(words)
            if argv is not None:
                found.append(Invocation(source, line, original, argv))
    return found


# --- files -> shell text ----------------------------------------------------------------------


def _yaml() -> YAML:
    """A round-trip reader: it keeps line numbers, and GitLab's `!reference` as a tagged list."""
    return YAML(typ="rt")


def _first_line(container: Any, key: Any, value: Any) -> int:
    """The 1-based line of a scalar's first content line (block scalars start below `|`/`>`)."""
    pos = container.lc.item(key) if isinstance(key, int) else container.lc.value(key)
    block = isinstance(value, (LiteralScalarString, FoldedScalarString))
    return int(pos[0]) + (2 if block else 1)


def _walk(node: Any) -> Iterator[tuple[Any, Any, Any]]:
    """(container, key, value) for every entry of every mapping and list, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else ()
    for key, value in items:
        yield node, key, value
        yield from _walk(value)


def from_github(path: Path, source: str) -> list[Invocation]:
    """`run:` of every step (workflow jobs, composite actions) run by a POSIX shell."""
    found: list[Invocation] = []
    for container, key, value in _walk(_yaml().load(path.read_text())):
        if key != "run" or not isinstance(value, str) or not isinstance(container, dict):
            continue
        shell = str(container.get("shell") or "bash").split()[0]
        if shell in ("bash", "sh"):
            found += from_shell(str(value), source, _first_line(container, key, value))
    return found


def _script_items(container: Any, key: Any, value: Any) -> Iterator[tuple[int, str]]:
    tag = getattr(getattr(value, "tag", None), "value", None)
    if tag == "!reference":
        return  # the referenced job's own lines are read where they are defined
    if isinstance(value, str):
        yield _first_line(container, key, value), str(value)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _script_items(value, i, item)


def from_gitlab(path: Path, source: str) -> list[Invocation]:
    """`script`, `before_script` and `after_script` of every job, in every YAML document (a
    template with `spec:` is two)."""
    found: list[Invocation] = []
    for document in _yaml().load_all(path.read_text()):
        for container, key, value in _walk(document):
            if key in ("script", "before_script", "after_script") and isinstance(container, dict):
                for line, text in _script_items(container, key, value):
                    found += from_shell(text, source, line)
    return found


def from_markdown(path: Path, source: str) -> list[Invocation]:
    """Fenced shell/console blocks (or blocks without a language); in a console block with `$ `
    prompts, only the prompt lines."""
    found: list[Invocation] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"\s*(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = lines[i + 1:end]
        if lang in _SHELL_LANGS:
            if any(re.match(r"\s*\$ ", b) for b in body):
                body = [re.sub(r"^\s*\$ ", "", b) if re.match(r"\s*\$ ", b) else "" for b in body]
            found += from_shell("\n".join(body), source, i + 2)
        i = end + 1
    return found


_COMMAND_START = re.compile(r"(\$\s+)?(ci|python3? -m|dagger run|(\S*/)?\S+\.sh)(\s|$)")


def from_python(path: Path, source: str) -> list[Invocation]:
    """Usage lines (`ci …`, `python -m …`) in a module docstring."""
    tree = ast.parse(path.read_text())
    doc = tree.body[0] if tree.body else None
    if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
            and isinstance(doc.value.value, str)):
        return []
    found: list[Invocation] = []
    for offset, text in enumerate(doc.value.value.splitlines()):
        if _COMMAND_START.match(text.strip()):
            found += from_shell(text.strip(), source, doc.lineno + offset)
    return found


def from_toml(path: Path, source: str) -> list[Invocation]:
    """Comment lines that are a command line (`# ci …`)."""
    found: list[Invocation] = []
    for n, text in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r"\s*#\s*(.*)", text)
        if m and _COMMAND_START.match(m.group(1)):
            found += from_shell(re.sub(r"^\$\s+", "", m.group(1)), source, n)
    return found


def sources(root: Path = ROOT) -> list[tuple[Path, str]]:
    """(file, kind) of every file whose command lines are checked."""
    groups: list[tuple[str, list[Path]]] = [
        ("github", sorted((root / ".github" / "workflows").glob("*.yml"))
         + sorted((root / ".github" / "workflows").glob("*.yaml"))
         + sorted((root / ".github" / "actions").glob("*/action.yml"))),
        ("gitlab", sorted((root / "templates" / "gitlab").glob("*.yml"))
         + [p for p in [root / ".gitlab-ci.yml"] if p.is_file()]),
        ("markdown", [root / "README.md", *sorted((root / "examples").rglob("README.md"))]),
        ("shell", sorted((root / "scripts").glob("*.sh")) + sorted((root / "examples").rglob("*.sh"))),
        ("toml", sorted((root / "examples").rglob("*.toml"))),
        ("python", sorted((root / "examples").glob("*/pipelines/*.py"))),
    ]
    return [(p, kind) for kind, paths in groups for p in paths if not _ignored(p, root)]


def _ignored(path: Path, root: Path) -> bool:
    rel = path.relative_to(root).parts
    return any(part.startswith(".") and part not in (".github", ".gitlab-ci.yml") for part in rel)


_READERS = {"github": from_github, "gitlab": from_gitlab, "markdown": from_markdown,
            "shell": lambda p, s: from_shell(p.read_text(), s), "toml": from_toml,
            "python": from_python}


def extract(path: Path, kind: str, root: Path = ROOT) -> list[Invocation]:
    """The invocations in one file, named relative to `root`."""
    source = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    return list(_READERS[kind](path, source))


def all_invocations(root: Path = ROOT) -> list[Invocation]:
    return [inv for path, kind in sources(root) for inv in extract(path, kind, root)]
