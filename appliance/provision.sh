#!/bin/sh
# Install tempalias onto a Debian 12 machine: the appliance's provisioning, and the way to install
# on an existing server. Idempotent: run it again after an update, or twice, without harm.
#
# Usage (as root, from a checkout of tempalias):
#   appliance/provision.sh [--wheels DIR] [--no-start] [--appliance]
#     --wheels DIR  install Python packages only from DIR (pip wheel / pip download output),
#                   without asking PyPI: reproducible, and works without HTTPS to PyPI
#     --no-start    enable the services but do not start them (image builds: nothing may run
#                   before first boot makes the per-instance secrets)
#     --appliance   the machine is tempalias's alone: also switch off Debian's stock
#                   redis-server and supervisor services, which tempalias does not use, and
#                   replace nginx's main configuration with the appliance's
#
# What it does: installs Debian's nginx, supervisor, redis-server, python3-venv and nftables
# (and, with --appliance, prometheus-node-exporter, on loopback only); creates the unprivileged
# user tempalias; copies the source to /opt/tempalias/src and installs it into the venv
# /opt/tempalias/venv; installs the configuration under /etc/tempalias (an existing
# tempalias.ini is kept), the nginx site and the systemd units; enables them.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
wheels=""
start=yes
appliance=no
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels=$(cd "${2:?--wheels needs a directory}" && pwd); shift 2 ;;
        --no-start) start=no; shift ;;
        --appliance) appliance=yes; shift ;;
        *) echo "provision.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

say() { echo "provision.sh: $*"; }

[ "$(id -u)" -eq 0 ] || { echo "provision.sh: run me as root" >&2; exit 1; }
if [ ! -f "$src/setup.py" ] || [ ! -d "$src/tempalias" ]; then
    echo "provision.sh: $src is not a tempalias source tree" >&2; exit 1
fi
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    . /etc/os-release
    if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ]; then
        say "warning: made for Debian 12, this is ${PRETTY_NAME:-unknown}"
    fi
fi

# --- Debian packages: only the missing ones, so a second run needs no network
packages="nginx supervisor redis-server python3 python3-venv nftables"
# The appliance also serves the machine's own metrics; an existing server keeps its own choice.
appliance_packages="prometheus-node-exporter"
if [ "$appliance" = yes ]; then
    packages="$packages $appliance_packages"
fi
missing=""
for package in $packages; do
    status=$(dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null || true)
    [ "$status" = installed ] || missing="$missing $package"
done
if [ -n "$missing" ]; then
    say "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi

# --- the user and the directories
getent group tempalias >/dev/null || groupadd --system tempalias
id -u tempalias >/dev/null 2>&1 ||
    useradd --system --gid tempalias --home-dir /var/lib/tempalias --no-create-home \
        --shell /usr/sbin/nologin --comment "tempalias service" tempalias
install -d -o root -g root -m 0755 /opt/tempalias
install -d -o root -g tempalias -m 0750 /etc/tempalias
install -d -o tempalias -g tempalias -m 0750 /var/lib/tempalias /var/log/tempalias
install -d -o tempalias -g tempalias -m 0700 /var/lib/tempalias/redis
# First boot writes root's authorized_keys here; its sandbox cannot create the directory.
install -d -o root -g root -m 0700 /root/.ssh

# --- the source, swapped in whole, and the venv
staging=/opt/tempalias/src.new
rm -rf "$staging" /opt/tempalias/src.old
mkdir "$staging"
readme=""
[ -f "$src/README.md" ] && readme=README.md
# shellcheck disable=SC2086
(cd "$src" && tar -cf - --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    setup.py tempalias static extension appliance systemd $readme) |
    tar -xf - -C "$staging" --no-same-owner
chmod -R u=rwX,go=rX "$staging"
if [ -d /opt/tempalias/src ]; then mv /opt/tempalias/src /opt/tempalias/src.old; fi
mv "$staging" /opt/tempalias/src
rm -rf /opt/tempalias/src.old

venv=/opt/tempalias/venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if [ -n "$wheels" ]; then
    set -- --no-index --find-links "$wheels"
else
    set --
fi
say "installing tempalias into $venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$@" -e /opt/tempalias/src
# The service cannot write byte code at run time (its unit makes /opt read-only): compile now.
"$venv/bin/python" -m compileall -q /opt/tempalias/src/tempalias >/dev/null
"$venv/bin/tempalias" --help >/dev/null

# --- configuration: tempalias.ini is the operator's once written; the rest is ours
if [ ! -f /etc/tempalias/tempalias.ini ]; then
    install -o root -g tempalias -m 0640 "$src/appliance/tempalias.ini" /etc/tempalias/tempalias.ini
fi
install -o root -g root -m 0644 "$src/appliance/supervisor/supervisord.conf" \
    /etc/tempalias/supervisord.conf
install -o root -g root -m 0644 "$src/appliance/redis.conf" /etc/tempalias/redis.conf
install -o root -g root -m 0644 "$src/appliance/firewall.nft" /etc/tempalias/firewall.nft

install -o root -g root -m 0644 "$src/appliance/nginx/tempalias.conf" \
    /etc/nginx/sites-available/tempalias
ln -sfn ../sites-available/tempalias /etc/nginx/sites-enabled/tempalias
# HTTPS only with the operator's certificate: fullchain.pem and privkey.pem in /etc/tempalias/tls.
install -d -o root -g root -m 0755 /etc/tempalias/nginx-tls.d
if [ -f /etc/tempalias/tls/fullchain.pem ] && [ -f /etc/tempalias/tls/privkey.pem ]; then
    install -o root -g root -m 0644 "$src/appliance/nginx/tls.conf" /etc/tempalias/nginx-tls.d/tls.conf
else
    rm -f /etc/tempalias/nginx-tls.d/tls.conf
fi
# On the appliance nginx serves tempalias alone: its main configuration (worker connections and
# open files) is ours. Elsewhere the operator's nginx.conf is left as it is.
if [ "$appliance" = yes ]; then
    install -o root -g root -m 0644 "$src/appliance/nginx/nginx.conf" /etc/nginx/nginx.conf
fi
# Our site is the default server on port 80; Debian's placeholder site would clash with it.
rm -f /etc/nginx/sites-enabled/default
nginx -t -q

# The node exporter's settings (loopback only): ours on the first run, the operator's afterwards,
# as long as they keep the file's first line. Debian's package ships the file; on a machine
# without the image's preinstalled package it listened on every address from its installation
# above until the restart below.
node_exporter_defaults=/etc/default/prometheus-node-exporter
if [ "$appliance" = yes ] && ! grep -qs '^# tempalias appliance' "$node_exporter_defaults"; then
    install -o root -g root -m 0644 "$src/appliance/node-exporter.default" "$node_exporter_defaults"
fi

for unit in "$src"/systemd/*.service "$src"/systemd/*.timer; do
    install -o root -g root -m 0644 "$unit" /etc/systemd/system/
done

# --- services
units="tempalias-firewall.service tempalias-configure.service tempalias-dns-records.service"
units="$units tempalias-redis.service tempalias.service tempalias-purge.timer nginx.service"
if [ "$appliance" = yes ]; then
    units="$units prometheus-node-exporter.service"
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    # shellcheck disable=SC2086
    systemctl enable --quiet $units
    if [ "$appliance" = yes ]; then
        systemctl disable --quiet --now redis-server.service supervisor.service 2>/dev/null || true
    fi
    if [ "$start" = yes ]; then
        systemctl restart tempalias-firewall.service tempalias-configure.service \
            tempalias-dns-records.service tempalias-redis.service tempalias.service
        systemctl start tempalias-purge.timer
        systemctl reload-or-restart nginx.service
        if [ "$appliance" = yes ]; then
            systemctl restart prometheus-node-exporter.service
        fi
        say "started; logs in /var/log/tempalias and journalctl -u 'tempalias*'"
    fi
else
    # No running systemd (a chroot or a container being built): enable by hand-made links.
    # shellcheck disable=SC2086
    systemctl enable --quiet $units
    say "systemd is not running here: services enabled, not started"
fi
say "done"
