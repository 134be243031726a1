#!/bin/sh
# Packer's shutdown command: remove everything that is this build's or would be the same on every
# machine made from the image (the build's SSH key, SSH host keys, the machine id, the payload,
# logs, apt's caches), hand the free blocks back, then power off. First boot makes the
# per-instance ones anew.
set -eu
if grep -Eq '^[[:space:]]*srs_secret[[:space:]]*=[[:space:]]*[^[:space:]]' /etc/tempalias/tempalias.ini; then
    echo "seal.sh: an SRS secret is in /etc/tempalias/tempalias.ini; refusing to seal it in" >&2
    exit 1
fi
rm -rf /root/tempalias-build /root/tempalias-payload.tar.gz
rm -f /root/.ssh/authorized_keys /etc/ssh/ssh_host_*
rm -f /var/lib/tempalias/srs_secret
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /var/log/journal/* /tmp/* /var/tmp/*
find /var/log -type f -exec truncate -s 0 {} +
sync
# Free blocks handed back to the disk image (the drive passes discards on: packer/tempalias.json),
# so that Packer's compressed copy holds only what is in use: the image is copied to every node.
fstrim -v / || echo "seal.sh: fstrim failed; the image keeps its free blocks" >&2
systemctl poweroff
