# Sourced by the scripts: installs Debian packages that are missing, once per call.
#   apt_install PACKAGE…   nothing when called with no package
apt_install() {
  (($#)) || return 0
  printf '==> installing %s (apt)\n' "$*" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
