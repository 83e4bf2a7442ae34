#!/usr/bin/env bash
# Runs distcron on this machine: a local etcd (Debian's etcd-server), a MongoDB-protocol server
# (`mongod` if on PATH, else the pinned nx-27017 in .venv), jobsvc on 127.0.0.1:8071, logsvc on
# 127.0.0.1:8072, one worker and the gateway on 127.0.0.1:8070 (loopback only, so no tokens). State lives under ./data. Servers already answering on their
# ports (etcd 2379, MongoDB 27017) are used as they are. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 100); do listening "$1" && return 0; sleep 0.1; done
  log "nothing answers on port $1 (see data/*.log)"; exit 1
}

if ! command -v etcd >/dev/null 2>&1; then
  log "installing etcd-server (apt)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi
req=tools/requirements-test.txt
want=$(sha256sum "$req" | cut -d' ' -f1)
if ! command -v mongod >/dev/null 2>&1 \
  && { [ ! -x .venv/bin/nx-27017 ] || [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]; }; then
  log "installing the pinned MongoDB-protocol server into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "$req"
  echo "$want" > .venv/.requirements.sha256
fi

mkdir -p data
pids=()
cleanup() {
  # Stop in reverse order: the worker drains first, etcd goes last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! listening 2379; then
  log "starting etcd on 127.0.0.1:2379 (log: data/etcd.log)"
  etcd --name distcron --data-dir data/etcd \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster distcron=http://127.0.0.1:2380 >data/etcd.log 2>&1 &
  pids+=($!)
  wait_port 2379
fi
if ! listening 27017; then
  mkdir -p data/mongo
  if command -v mongod >/dev/null 2>&1; then
    log "starting mongod on 127.0.0.1:27017 (log: data/mongo.log)"
    mongod --bind_ip 127.0.0.1 --port 27017 --dbpath data/mongo >data/mongo.log 2>&1 &
  else
    log "starting nx-27017 on 127.0.0.1:27017 (log: data/mongo.log)"
    .venv/bin/nx-27017 --host 127.0.0.1 --port 27017 --data-dir data/mongo \
      --pid-file data/nx-27017.pid --log-file data/mongo.log >/dev/null 2>&1 &
  fi
  pids+=($!)
  wait_port 27017
fi

log "building"
cargo build --quiet -p distcron-jobsvc -p distcron-logsvc -p distcron-worker -p distcron-gateway
bin=${CARGO_TARGET_DIR:-target}/debug

log "starting jobsvc on 127.0.0.1:8071, logsvc on 127.0.0.1:8072 (logs: data/*.log)"
"$bin/jobsvc" >data/jobsvc.log 2>&1 &
pids+=($!)
"$bin/logsvc" >data/logsvc.log 2>&1 &
pids+=($!)
wait_port 8071
wait_port 8072
log "starting a worker (data: data/worker, log: data/worker.log)"
"$bin/worker" --data-dir data/worker >data/worker.log 2>&1 &
pids+=($!)

log "starting the gateway on 127.0.0.1:8070 (log: data/gateway.log)"
"$bin/gateway" >data/gateway.log 2>&1 &
pids+=($!)
wait_port 8070

log "distcron is up. Try:"
cat >&2 <<'EOF'
    curl -s -XPOST localhost:8070/api/v1/jobs -H 'content-type: application/json' \
      -d '{"name":"hello","command":"echo hello","cronExpr":"*/5 * * * * *"}'
    curl -s 'localhost:8070/api/v1/jobs/hello/runs?limit=3'
    curl -s localhost:8070/job/list          # the seed's routes work too
EOF
wait -n "${pids[@]}" || true
log "a process exited; stopping (see data/*.log)"
