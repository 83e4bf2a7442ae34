#!/usr/bin/env bash
# Runs docker-compose.yml for real (opt-in; takes a while, most of it the image build):
#   1. makes sure Docker Engine runs (Debian docker.io; starts dockerd if none answers) and
#      docker-compose and debootstrap are installed;
#   2. builds local stand-ins for the images the compose file and deploy/Dockerfile name, unless
#      an image of that name is present (tools/compose-standins/README.md says which and why);
#   3. builds distcron:dev with the real deploy/Dockerfile;
#   4. `docker-compose up`, waits until every service is healthy (and no container restarted),
#      saves jobs through the gateway with the development token, sees runs from both workers,
#      kills a run, then tears everything down, volumes included.
#
#   scripts/compose-test.sh [--rebuild-standins] [--keep]
#
# --keep leaves the stack up (then: docker-compose -p distcron-compose-test down -v).
# The image build is handed the CA certificates this machine adds to Debian's
# (/usr/local/share/ca-certificates/*.crt), or EXTRA_CA_FILE, for machines behind a TLS-intercepting
# proxy; with neither the build uses the image's own CA store.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

rebuild=0 keep=0
for arg in "$@"; do
  case "$arg" in
    --rebuild-standins) rebuild=1 ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'compose-test: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/apt.sh
. scripts/lib/apt.sh

work=${COMPOSE_TEST_WORK:-/var/tmp/distcron-compose-test}
project=distcron-compose-test
gateway=http://127.0.0.1:8070
token=dev-admin
mkdir -p "$work"

# --- 1. Docker Engine, docker-compose, debootstrap ------------------------------------------
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v curl >/dev/null 2>&1 || missing+=(curl)
apt_install ${missing[@]+"${missing[@]}"}

started_dockerd=""
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: $work/dockerd.log)"
  dockerd --storage-driver=overlay2 --pidfile "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
  started_dockerd=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "dockerd did not start; see $work/dockerd.log"
fi

dc() { docker-compose -p "$project" -f "$root/docker-compose.yml" "$@"; }

cleanup() {
  rc=$?
  if ((rc != 0)); then
    log "failed; the services' last log lines:"
    dc logs --no-color --tail 30 2>/dev/null | tail -n 200 >&2 || true
  fi
  if ((keep == 0)); then
    log "docker-compose down -v"
    dc down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  if [ -n "$started_dockerd" ] && ((keep == 0)); then
    kill "$started_dockerd" 2>/dev/null || true
    wait "$started_dockerd" 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# The legacy builder resolves FROM against local images only, which is what stand-ins need.
build() { DOCKER_BUILDKIT=0 docker build --quiet "$@" >/dev/null; }
present() { ((rebuild == 0)) && docker image inspect "$1" >/dev/null 2>&1; }

# --- 2. Stand-ins ----------------------------------------------------------------------------
standins=tools/compose-standins
if present debian:bookworm-slim; then
  log "debian:bookworm-slim: present"
else
  log "debian:bookworm-slim: debootstrap (minbase, bookworm)"
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian \
    >"$work/debootstrap.log" 2>&1 || die "debootstrap failed; see $work/debootstrap.log"
  tar -C "$work/rootfs" -c . | docker import \
    --change 'LABEL distcron.standin="debian:bookworm-slim"' --change 'CMD ["bash"]' \
    - debian:bookworm-slim >/dev/null
  rm -rf "$work/rootfs"
fi

if present rust:1-bookworm; then
  log "rust:1-bookworm: present"
else
  sysroot=$(rustc --print sysroot)
  log "rust:1-bookworm: Debian base + the toolchain at $sysroot"
  ctx="$work/rust"
  rm -rf "$ctx" && mkdir -p "$ctx"
  cp "$standins/rust/Dockerfile" "$ctx/"
  cp -a "$sysroot" "$ctx/toolchain"
  rm -rf "$ctx/toolchain/share/doc"
  build -t rust:1-bookworm "$ctx"
  rm -rf "$ctx"
fi

if present quay.io/coreos/etcd:v3.5.17; then
  log "quay.io/coreos/etcd:v3.5.17: present"
else
  log "quay.io/coreos/etcd:v3.5.17: Debian's etcd-server"
  build -t quay.io/coreos/etcd:v3.5.17 "$standins/etcd"
fi

if present mongo:7; then
  log "mongo:7: present"
else
  log "mongo:7: nx-27017 (wheels from PyPI, pinned in tools/requirements-test.txt)"
  ctx="$work/mongo"
  rm -rf "$ctx" && mkdir -p "$ctx/wheels"
  cp "$standins/mongo/Dockerfile" "$standins/mongo/mongosh" "$ctx/"
  grep -E '^(nx-27017|neosqlite|pymongo|dnspython)==' tools/requirements-test.txt >"$ctx/requirements.txt"
  python3 -m pip download --quiet --disable-pip-version-check -d "$ctx/wheels" -r "$ctx/requirements.txt"
  build -t mongo:7 "$ctx"
  rm -rf "$ctx"
fi

# --- 3. The project's image, with the real Dockerfile ---------------------------------------
# The CAs this machine adds to Debian's (Debian's convention: /usr/local/share/ca-certificates),
# or EXTRA_CA_FILE: handed to the build stage, which trusts them too (a TLS-intercepting proxy).
ca_files=(/usr/local/share/ca-certificates/*.crt)
[ -n "${EXTRA_CA_FILE:-}" ] && ca_files=("$EXTRA_CA_FILE")
ca_args=()
if [ -r "${ca_files[0]}" ]; then
  log "handing the build the CA certificates ${ca_files[*]}"
  ca_args=(--build-arg "EXTRA_CA_CERTS=$(cat "${ca_files[@]}")")
fi
log "building distcron:dev from deploy/Dockerfile (release build; several minutes)"
t0=$SECONDS
build -f deploy/Dockerfile -t distcron:dev "${ca_args[@]}" . || die "the image build failed"
log "image built in $((SECONDS - t0)) s"

# --- 4. The stack ----------------------------------------------------------------------------
if curl -s -o /dev/null "$gateway/healthz"; then
  die "something already answers on port 8070; stop it first"
fi
dc down -v --remove-orphans >/dev/null 2>&1 || true
log "docker-compose up"
dc up -d --no-build >/dev/null 2>&1 || { dc up -d --no-build; die "docker-compose up failed"; }

# Every container running with no restart, and healthy where it has a health check.
states() {
  docker inspect -f '{{.Name}} {{.State.Status}} {{.RestartCount}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}}' \
    $(dc ps -q) | sed 's#^/##'
}
log "waiting for every service to be healthy"
deadline=$((SECONDS + 240))
while :; do
  s=$(states)
  if echo "$s" | awk '$3 != 0 { bad = 1 } END { exit !bad }'; then
    echo "$s" >&2
    die "a container restarted (see its log below)"
  fi
  if [ "$(echo "$s" | wc -l)" -eq 7 ] &&
     echo "$s" | awk '$2 != "running" || ($4 != "-" && $4 != "healthy") { bad = 1 } END { exit bad }'; then
    break
  fi
  ((SECONDS < deadline)) || { echo "$s" >&2; die "not every service became healthy in 240 s"; }
  sleep 2
done
echo "$s" | sed 's/^/    /' >&2

api() {
  local method=$1 path=$2
  shift 2
  curl -sS --fail-with-body -X "$method" -H "Authorization: Bearer $token" \
    -H 'content-type: application/json' "$gateway$path" "$@"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

log "waiting for both workers to register"
deadline=$((SECONDS + 60))
until [ "$(api GET /api/v1/workers | json 'len(d["workers"])')" -ge 2 ]; do
  ((SECONDS < deadline)) || die "fewer than two workers in /api/v1/workers after 60 s"
  sleep 1
done

log "saving 6 every-second jobs"
jobs=()
for i in 1 2 3 4 5 6; do
  name="compose-echo-$i"
  jobs+=("$name")
  api PUT "/api/v1/jobs/$name" -d "{\"name\":\"$name\",\"command\":\"echo compose $i\",\"cronExpr\":\"* * * * * *\"}" >/dev/null
done

log "waiting for runs from worker-1 and worker-2"
deadline=$((SECONDS + 60))
while :; do
  seen=$(for name in "${jobs[@]}"; do
    api GET "/api/v1/jobs/$name/runs?limit=50&status=succeeded&withoutOutput=false" |
      json '"\n".join(r["workerId"] + " " + r["output"].strip() for r in d["runs"])'
  done | sort -u)
  if echo "$seen" | grep -q '^worker-1 compose ' && echo "$seen" | grep -q '^worker-2 compose '; then
    break
  fi
  ((SECONDS < deadline)) || { echo "$seen" >&2; die "no succeeded runs from both workers in 60 s"; }
  sleep 2
done
echo "$seen" | awk 'NF { n[$1]++ } END { for (w in n) printf "    %s: runs of %d jobs\n", w, n[w] }' >&2
for name in "${jobs[@]}"; do api DELETE "/api/v1/jobs/$name" >/dev/null; done

log "triggering a long run and killing it"
api PUT /api/v1/jobs/compose-sleeper -d '{"name":"compose-sleeper","command":"sleep 300","cronExpr":"0 0 0 1 1 * 2099"}' >/dev/null
run=$(api POST /api/v1/jobs/compose-sleeper/trigger | json 'd["runId"]')
deadline=$((SECONDS + 30))
until [ "$(api GET "/api/v1/runs/$run" 2>/dev/null | json 'd["status"]' 2>/dev/null)" = running ]; do
  ((SECONDS < deadline)) || die "run $run did not start in 30 s"
  sleep 1
done
api POST /api/v1/jobs/compose-sleeper/kill -d "{\"runId\":\"$run\"}" >/dev/null
deadline=$((SECONDS + 30))
while :; do
  status=$(api GET "/api/v1/runs/$run" | json 'd["status"] + " on " + d["workerId"]')
  [ "${status%% *}" = killed ] && break
  ((SECONDS < deadline)) || die "run $run is $status 30 s after the kill"
  sleep 1
done
log "run $run: $status"
log "compose stack OK: 7 services healthy, runs on both workers, a run killed"
