#!/usr/bin/env bash
# A local multi-process cluster on loopback: etcd, a MongoDB-protocol server (`mongod` if on PATH,
# else the pinned nx-27017 in .venv), 2 jobsvc, 2 logsvc, 3 workers and the gateway, each its own
# process, with logs and pids under one directory.
#
#   scripts/cluster.sh up       start (builds the binaries first unless BIN_DIR is set)
#   scripts/cluster.sh up --tls the same with TLS on every hop: a throwaway CA and certificate
#                               (distcron-dev-certs) in $CLUSTER_DIR/tls; etcd serves clients and
#                               peers over TLS and requires client certificates, jobsvc and logsvc
#                               require them too (mutual TLS), the gateway serves HTTPS. MongoDB
#                               stays plaintext on loopback (nx-27017 cannot serve TLS).
#   scripts/cluster.sh status   which of its processes run
#   scripts/cluster.sh down     stop exactly the processes it started (workers first)
#
# Environment: CLUSTER_DIR (default ./data/cluster), PORT_BASE (default 18000: gateway on
# PORT_BASE+70, jobsvc +71/+73, logsvc +72/+74, etcd +379/+380, Mongo +717), BIN_DIR (prebuilt
# binaries), MONGO_URI (use this MongoDB instead of starting one). Keep PORT_BASE+717 below the
# kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range, usually from 32768): a port in
# it can be taken as the local end of an outgoing connection just before a process binds it.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${CLUSTER_DIR:-data/cluster}
base=${PORT_BASE:-18000}
gateway_port=$((base + 70))
etcd_port=$((base + 379))
mongo_port=$((base + 717))
log() { printf '==> %s\n' "$*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 150); do listening "$1" && return 0; sleep 0.1; done
  log "nothing answers on port $1 (logs: $dir/*.log)"; return 1
}

start() { # name, then the command
  local name=$1; shift
  "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

up() {
  local tls=0
  [ "${1:-}" = "--tls" ] && tls=1
  mkdir -p "$dir"
  if ls "$dir"/*.pid >/dev/null 2>&1; then
    log "already up (or stale pids in $dir): run '$0 down' first"; exit 1
  fi
  local bin=${BIN_DIR:-}
  if [ -z "$bin" ]; then
    log "building"
    cargo build --quiet -p distcron-jobsvc -p distcron-logsvc -p distcron-worker -p distcron-gateway \
      -p distcron-testkit --bins
    bin=${CARGO_TARGET_DIR:-target}/debug
  fi
  local scheme=http
  local etcd_tls=()
  if [ $tls -eq 1 ]; then
    scheme=https
    local certs=$dir/tls
    "$bin/distcron-dev-certs" "$certs"
    etcd_tls=(--cert-file "$certs/node.pem" --key-file "$certs/node-key.pem"
      --trusted-ca-file "$certs/ca.pem" --client-cert-auth
      --peer-cert-file "$certs/node.pem" --peer-key-file "$certs/node-key.pem"
      --peer-trusted-ca-file "$certs/ca.pem" --peer-client-cert-auth)
    export DISTCRON_TLS_CERT=$certs/node.pem DISTCRON_TLS_KEY=$certs/node-key.pem \
      DISTCRON_TLS_CA=$certs/ca.pem DISTCRON_TLS_CLIENT_CA=$certs/ca.pem \
      DISTCRON_ETCD_CA=$certs/ca.pem DISTCRON_ETCD_CERT=$certs/node.pem DISTCRON_ETCD_KEY=$certs/node-key.pem \
      DISTCRON_HTTPS_CERT=$certs/node.pem DISTCRON_HTTPS_KEY=$certs/node-key.pem
  fi
  start etcd etcd --name cluster --data-dir "$dir/etcd" \
    --listen-client-urls "$scheme://127.0.0.1:$etcd_port" --advertise-client-urls "$scheme://127.0.0.1:$etcd_port" \
    --listen-peer-urls "$scheme://127.0.0.1:$((base + 380))" --initial-advertise-peer-urls "$scheme://127.0.0.1:$((base + 380))" \
    --initial-cluster "cluster=$scheme://127.0.0.1:$((base + 380))" ${etcd_tls[@]+"${etcd_tls[@]}"}
  local mongo_uri=${MONGO_URI:-}
  if [ -z "$mongo_uri" ]; then
    mkdir -p "$dir/mongo"
    if command -v mongod >/dev/null 2>&1; then
      start mongo mongod --bind_ip 127.0.0.1 --port "$mongo_port" --dbpath "$dir/mongo"
    else
      start mongo .venv/bin/nx-27017 --host 127.0.0.1 --port "$mongo_port" --data-dir "$dir/mongo" \
        --pid-file "$dir/nx-27017.pid.file" --log-file "$dir/mongo-server.log"
    fi
    mongo_uri="mongodb://127.0.0.1:$mongo_port"
    wait_port "$mongo_port"
  fi
  wait_port "$etcd_port"
  export DISTCRON_ETCD_ENDPOINTS="$scheme://127.0.0.1:$etcd_port"
  # Prometheus /metrics: jobsvc-i on base+170+i, logsvc-i on base+180+i, worker-i on base+190+i.
  for i in 1 2; do
    start "jobsvc-$i" "$bin/jobsvc" --listen "127.0.0.1:$((base + 69 + 2 * i))" --instance-id "jobsvc-$i" \
      --metrics-listen "127.0.0.1:$((base + 170 + i))"
    start "logsvc-$i" "$bin/logsvc" --listen "127.0.0.1:$((base + 70 + 2 * i))" --instance-id "logsvc-$i" \
      --metrics-listen "127.0.0.1:$((base + 180 + i))" --mongo-uri "$mongo_uri"
  done
  for i in 1 2 3; do
    start "worker-$i" "$bin/worker" --worker-id "worker-$i" --data-dir "$dir/worker-$i" \
      --metrics-listen "127.0.0.1:$((base + 190 + i))"
  done
  start gateway "$bin/gateway" --listen "127.0.0.1:$gateway_port"
  wait_port "$gateway_port"
  local exited=0 pidfile name
  for pidfile in "$dir"/*.pid; do
    name=$(basename "$pidfile" .pid)
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      exited=1
      log "$name exited; the end of $dir/$name.log (before any backtrace):"
      sed -n '/^Stack backtrace:/q;p' "$dir/$name.log" | tail -n 8 >&2
    fi
  done
  if [ $exited -eq 1 ]; then log "not all up: run '$0 down' to stop the rest"; return 1; fi
  log "up: gateway and console on $scheme://127.0.0.1:$gateway_port (logs and pids in $dir)"
  [ $tls -eq 0 ] || log "TLS: CA in $dir/tls/ca.pem (e.g. curl --cacert $dir/tls/ca.pem)"
  log "metrics: $scheme://127.0.0.1:$gateway_port/metrics, jobsvc :$((base + 171))-$((base + 172)), logsvc :$((base + 181))-$((base + 182)), workers :$((base + 191))-$((base + 193))"
}

status() {
  local any=1
  for pidfile in "$dir"/*.pid; do
    [ -e "$pidfile" ] || continue
    any=0
    local name pid
    name=$(basename "$pidfile" .pid)
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then echo "$name running (pid $pid)"; else echo "$name stopped"; fi
  done
  [ $any -eq 0 ] || echo "not up"
}

stop_one() {
  local pidfile=$dir/$1.pid
  [ -e "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

down() {
  # Workers first (they drain and flush to logsvc), then the services, the stores last.
  for name in worker-1 worker-2 worker-3 gateway jobsvc-1 jobsvc-2 logsvc-1 logsvc-2 mongo etcd; do
    stop_one "$name"
  done
  log "down"
}

case "${1:-}" in
  up) up "${2:-}" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up [--tls]|down|status" >&2; exit 2 ;;
esac
