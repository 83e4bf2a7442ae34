#!/usr/bin/env bash
# The benchmark suite: builds the release binaries, then runs distcron-bench, which starts the
# whole distributed stack on loopback, measures this machine's limits and the scenarios of
# BENCHMARKS.md, prints a table per scenario and writes JSON under bench/results/.
#
#   scripts/bench.sh                 every scenario (about 15 minutes)
#   scripts/bench.sh steady burst    some of them; `scripts/bench.sh --help` lists the options
#
# Needs what scripts/test.sh installs (etcd-server, the nx-27017 Mongo-wire server in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p distcron-bench -p distcron-jobsvc -p distcron-logsvc \
  -p distcron-worker -p distcron-gateway
exec "${CARGO_TARGET_DIR:-target}/release/distcron-bench" "$@"
