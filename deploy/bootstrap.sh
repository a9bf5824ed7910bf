# shellcheck shell=bash
# Sourced by deploy/up and deploy/test (run from the repository root): make sure a python3 >= 3.11 with venv
# support exists, that .venv exists, and that the project is installed in it with its test extras. pip runs
# again only when pyproject.toml changed (its hash is stamped into .venv). Everything else (mosquitto,
# influxd, wrk, chromium) is installed by deploy/stack.py, which needs nothing but the standard library.

bess_apt_install() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root to apt-get install $*" >&2; return 1; }
    sudo=(sudo -n)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

bess_bootstrap() {
  # One bootstrap at a time per checkout: two concurrent pip runs into one venv can break it.
  local lock
  lock="${TMPDIR:-/tmp}/bess-bootstrap-$(pwd | sha256sum | cut -c1-16).lock"
  exec 9>"$lock"
  flock 9

  if ! command -v python3 >/dev/null; then
    bess_apt_install python3 python3-venv
  fi
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "python3 is $(python3 --version 2>&1); this project needs Python >= 3.11" >&2
    return 1
  fi
  if ! { [ -x .venv/bin/python ] && .venv/bin/python -c 'pass' 2>/dev/null; }; then
    rm -rf .venv
    if ! python3 -m venv .venv; then
      # Debian ships venv/ensurepip separately.
      rm -rf .venv
      bess_apt_install python3-venv
      python3 -m venv .venv
    fi
  fi
  local stamp=.venv/.bess-pyproject.sha256 want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing the project into .venv (pyproject.toml changed or first run)"
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" >"$stamp"
  fi

  flock -u 9
  exec 9>&-
}
