#!/usr/bin/env bash
# The one test command: installs what is missing (idempotently), then checks formatting, lints and
# runs every test. Used as is by .ci/run.
#
#   scripts/test.sh            everything
#   scripts/test.sh -p distcron-kv   extra arguments go to `cargo test`
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
# shellcheck source=lib/apt.sh
. scripts/lib/apt.sh

# --- System packages (Debian) ------------------------------------------------------------------
apt_missing=()
command -v etcd >/dev/null 2>&1 || apt_missing+=(etcd-server)
[ -x /usr/bin/chromium ] || apt_missing+=(chromium)
command -v npm >/dev/null 2>&1 || apt_missing+=(nodejs npm)
command -v docker-compose >/dev/null 2>&1 || apt_missing+=(docker-compose)
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || apt_missing+=(faketime)
apt_install ${apt_missing[@]+"${apt_missing[@]}"}

# --- Python tools pinned in tools/requirements-test.txt (nx-27017, grpcurl) --------------------
req=tools/requirements-test.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing pinned Python test tools into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

# --- Browser-test driver: playwright-core, pinned by console-tests/package-lock.json -------------
lock=console-tests/package-lock.json
lock_stamp=console-tests/node_modules/.lock.sha256
lock_want=$(sha256sum "$lock" | cut -d' ' -f1)
if [ "$(cat "$lock_stamp" 2>/dev/null)" != "$lock_want" ]; then
  log "installing the browser-test driver (npm ci in console-tests)"
  npm ci --prefix console-tests --no-audit --no-fund --loglevel=error
  echo "$lock_want" > "$lock_stamp"
fi

# --- Rust --------------------------------------------------------------------------------------
# Unpacks every crate first, so tools/protoc finds the vendored protoc before any build script.
log "cargo fetch"
cargo fetch --quiet
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "cargo test"
cargo test --workspace "$@"
