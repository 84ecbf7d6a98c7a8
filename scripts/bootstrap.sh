#!/usr/bin/env bash
# Install what callpark needs: Debian packages (as root; otherwise print the command)
# and the Python packages into ./.venv. Idempotent and quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(etcd-server etcd-client openssl kamailio kamailio-presence-modules kamailio-tls-modules sip-tester baresip prometheus iproute2 iptables util-linux sox bind9-utils systemd linphone-cli espeak-ng)
BINARIES=(etcd etcdctl openssl kamailio sipp baresip promtool prometheus ip iptables unshare sox named-checkzone systemd-analyze linphonec espeak-ng)

# Packages that ship no command are probed by a file they install (a glob: any architecture).
MODULE_FILES=("/usr/lib/*/kamailio/modules/tls.so")  # kamailio-tls-modules: SIP over TLS at the edge

missing=()
for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
# BLF at the edge: presence + presence_dialoginfo (kamailio-presence-modules) are files, not commands
compgen -G "/usr/lib/*/kamailio/modules/presence_dialoginfo.so" >/dev/null || missing+=(presence_dialoginfo.so)
for f in "${MODULE_FILES[@]}"; do compgen -G "$f" >/dev/null || missing+=("$f"); done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "bootstrap: installing Debian packages (missing: ${missing[*]})" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${DEB_PACKAGES[@]}" >/dev/null
    # The packages ship systemd units; callpark starts its own instances with its own
    # ports and data dirs, so make sure no packaged service holds the default ports.
    for svc in etcd kamailio prometheus prometheus-node-exporter; do
      if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
    done
  else
    echo "bootstrap: missing ${missing[*]}; run as root: apt-get install -y ${DEB_PACKAGES[*]}" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
stamp=.venv/.callpark-installed
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "bootstrap: installing Python packages into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
