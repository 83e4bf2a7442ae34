#!/usr/bin/env bash
# Runs what exists of distcron on this machine today: a local etcd (Debian's etcd-server, data in
# ./data/etcd; an etcd already answering on 127.0.0.1:2379 is used instead) and jobsvc on
# 127.0.0.1:8071. Extra arguments go to jobsvc. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcd >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi

mkdir -p data
if ! (exec 3<>/dev/tcp/127.0.0.1/2379) 2>/dev/null; then
  echo "==> starting etcd on 127.0.0.1:2379 (log: data/etcd.log)" >&2
  etcd --name distcron --data-dir data/etcd \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster distcron=http://127.0.0.1:2380 >data/etcd.log 2>&1 &
  etcd_pid=$!
  trap 'kill "$etcd_pid" 2>/dev/null; wait "$etcd_pid" 2>/dev/null' EXIT
fi

cargo fetch --quiet
echo "==> jobsvc on 127.0.0.1:8071 (try: .venv/bin/grpcurl -plaintext 127.0.0.1:8071 list)" >&2
cargo run --quiet -p distcron-jobsvc --bin jobsvc -- "$@"
