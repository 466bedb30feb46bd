#!/bin/sh
# Installs what tests/interop needs on Debian 12; idempotent; run as root.
#   Debian: prosody, prosody-modules (mod_http_upload_external), ejabberd
#   PyPI:   tests/interop/requirements.txt (slixmpp, aiohttp, pytest, tuspy)
#   npm:    tests/interop/package.json + package-lock.json (tus-js-client), `npm ci` into
#           tests/interop/node_modules with the machine's Node.js (>= 18; Node 20 expected);
#           Debian's nodejs/npm (18) are installed only when node or npm is missing
# The tests start private instances on free loopback ports, so the system-wide
# prosody/ejabberd services are kept stopped and disabled.
set -eu

HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
PYTHON=${PYTHON:-python3}
PKGS="prosody prosody-modules ejabberd"
# Node.js for tus-js-client: the machine's own if it has one (Node 20 from another source is
# not replaced); otherwise Debian's.
if ! command -v node >/dev/null 2>&1; then
    PKGS="$PKGS nodejs"
fi
if ! command -v npm >/dev/null 2>&1; then
    PKGS="$PKGS npm"
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 1
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done

if [ -n "$missing" ]; then
    # Stop the maintainer scripts from starting the system services (5222,
    # 5269, 5280, 5443, 1883, 3478...) during the install.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
fi

# Whatever happened before (an earlier install, a reboot), keep the system
# instances down: the tests never use them.
for svc in prosody ejabberd; do
    if [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
        if [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
            "/etc/init.d/$svc" stop || true
        fi
    fi
done

"$PYTHON" -m pip install --disable-pip-version-check -q -r "$HERE/requirements.txt"

# tus-js-client, exactly as package-lock.json pins it (npm ci replaces node_modules: idempotent).
(cd "$HERE" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)
