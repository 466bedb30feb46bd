#!/bin/sh
# Installs what tests/deploy needs on Debian 12; idempotent; run as root.
#   systemd     systemd-analyze verify / security (the unit)
#   nginx       a private nginx proxies a 50 MiB upload (deploy/nginx)
#   apache2     apache2 -t and a private Apache proxies an upload (deploy/apache)
#   prometheus  only for promtool (deploy/monitoring/alerts.yml); the server is never started
#   strace      the server's system calls against the unit's SystemCallFilter
#   openssl     a throwaway TLS certificate for the proxies
#   curl        uploads over HTTP/2 through the proxies
#   lua5.4      loads the Prosody/Metronome snippets (deploy/xmpp)
#   redis-server  a private one (free port) for the scale-out test (deploy/s3); the system
#               service is left as it is
#   PyPI        pytest, PyYAML and boto3 (looks into the Garage bucket), if python3 lacks them
# The scale-out test also needs Garage 2.x (cargo install garage --locked --version 2.5.0, as
# .ci/run does) and tus-js-client and tuspy (tests/interop/install.sh).
# The tests start private nginx/Apache instances on free loopback ports, so the
# system-wide nginx, apache2 and prometheus services are kept stopped and
# disabled, and nothing listens on port 80 because of this script.
set -eu

PYTHON=${PYTHON:-python3}
PKGS="systemd nginx apache2 prometheus strace openssl lua5.4 curl redis-server"
SERVICES="nginx apache2 apache-htcacheclean prometheus prometheus-node-exporter"

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 1
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done

if [ -n "$missing" ]; then
    # Stop the maintainer scripts from starting nginx/apache2 (port 80) and
    # prometheus (9090) during the install.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update
    # No recommends: prometheus would pull in prometheus-node-exporter & co.
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi

# Whatever happened before (an earlier install, a reboot), keep the system
# instances down: the tests never use them.
for svc in $SERVICES; do
    # systemctl disable also works offline (containers without systemd as PID 1).
    systemctl disable "$svc" >/dev/null 2>&1 || update-rc.d "$svc" disable >/dev/null 2>&1 || true
    if [ -d /run/systemd/system ]; then
        systemctl stop "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
        "/etc/init.d/$svc" stop || true
    fi
done

if ! "$PYTHON" -c 'import pytest, yaml, boto3' >/dev/null 2>&1; then
    "$PYTHON" -m pip install --disable-pip-version-check -q 'pytest>=7' 'PyYAML>=6' 'boto3>=1.26'
fi

echo "install.sh: $(nginx -v 2>&1); $(apache2 -v 2>/dev/null | head -n1); $(systemd-analyze --version | head -n1);" \
     "$(promtool --version 2>&1 | head -n1)"
