#!/usr/bin/env bash
# The embedded default: the whole system in one process — jobsvc, logsvc, a worker, and the gateway
# with the console on http://127.0.0.1:8070 — with no etcd and no MongoDB; everything is kept under
# ./data. Extra arguments go to `distcron` (`--help` lists them). Ctrl-C stops it: the worker
# drains its runs first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p distcron
exec "${CARGO_TARGET_DIR:-target}/debug/distcron" "$@"
