#!/bin/sh
# Build the base Debian 12 disk image that Packer provisions into the appliance.
#
# Nothing can be downloaded here but Debian's packages, so the base is made from them: mmdebstrap
# writes a root tree, `mkfs.ext4 -d` turns it into a file system image, and a FAT boot partition
# with syslinux, the kernel and the initrd goes in front of it. Partitions are written into the
# disk image file at their offsets, so no loop device (and no mount) is needed.
#
# The only credential is an SSH key made for this build (root's authorized_keys); Packer's last
# step removes it before the image is sealed.
#
# Usage: appliance/build-base.sh OUTPUT_DIR
#   writes OUTPUT_DIR/base.qcow2 and OUTPUT_DIR/build-key (+ .pub)
# Environment: TEMPALIAS_DEBIAN_MIRROR (default http://deb.debian.org/debian)
set -eu

out=${1:?usage: build-base.sh OUTPUT_DIR}
mirror=${TEMPALIAS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${TEMPALIAS_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
boot_mib=128
root_mib=3072

for tool in mmdebstrap mkfs.ext4 mkfs.vfat mcopy syslinux sfdisk qemu-img ssh-keygen; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build-base.sh: $tool is missing" >&2; exit 1; }
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[ -r "$mbr" ] || { echo "build-base.sh: $mbr is missing (apt-get install syslinux-common)" >&2; exit 1; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$out/base.XXXXXX")
trap 'rm -rf "$work"' EXIT

rm -f "$out/build-key" "$out/build-key.pub"
ssh-keygen -q -t ed25519 -N '' -C tempalias-image-build -f "$out/build-key"
root_uuid=$(cat /proc/sys/kernel/random/uuid)

# The Debian packages provision.sh installs are preinstalled here, at native speed (unpacking
# them in the TCG guest takes minutes); provision.sh finds them and skips apt-get.
appliance_packages=nginx,supervisor,redis-server,python3,python3-venv,nftables,prometheus-node-exporter
# The customize hook runs with the new root tree as "$1"; these variables are exported to it.
export TEMPALIAS_BUILD_PUBKEY="$out/build-key.pub" TEMPALIAS_ROOT_UUID="$root_uuid"
# shellcheck disable=SC2016  # the hooks' "$1" is expanded by mmdebstrap's shell, not this one
mmdebstrap --variant=apt --mode=root --format=directory \
    --include=systemd-sysv,udev,dbus,kmod,linux-image-amd64,initramfs-tools,openssh-server,systemd-resolved,iproute2,ca-certificates,$appliance_packages \
    --customize-hook='echo tempalias > "$1/etc/hostname"' \
    --customize-hook='printf "UUID=%s / ext4 errors=remount-ro 0 1\n" "$TEMPALIAS_ROOT_UUID" > "$1/etc/fstab"' \
    --customize-hook='mkdir -p "$1/etc/systemd/network" && printf "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n" > "$1/etc/systemd/network/50-dhcp.network"' \
    --customize-hook='chroot "$1" systemctl enable systemd-networkd systemd-resolved ssh' \
    --customize-hook='ln -sf /run/systemd/resolve/stub-resolv.conf "$1/etc/resolv.conf"' \
    --customize-hook='install -d -m 700 "$1/root/.ssh" && install -m 600 "$TEMPALIAS_BUILD_PUBKEY" "$1/root/.ssh/authorized_keys"' \
    bookworm "$work/root" \
    "deb $mirror bookworm main" \
    "deb $mirror bookworm-updates main" \
    "deb $security_mirror bookworm-security main"

kernel=$(find "$work/root/boot" -name 'vmlinuz-*' | sort | tail -n 1)
initrd=$(find "$work/root/boot" -name 'initrd.img-*' | sort | tail -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
    echo "build-base.sh: no kernel or initrd in the tree" >&2; exit 1
fi

# The boot partition: FAT with syslinux, written through mtools (no mount).
cat > "$work/syslinux.cfg" <<EOF
DEFAULT tempalias
TIMEOUT 10
PROMPT 0
LABEL tempalias
    LINUX /vmlinuz
    INITRD /initrd.img
    APPEND root=UUID=$root_uuid ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 quiet
EOF
mkfs.vfat -n BOOT -C "$work/boot.img" $((boot_mib * 1024)) >/dev/null
syslinux --install "$work/boot.img"
mcopy -i "$work/boot.img" "$kernel" ::/vmlinuz
mcopy -i "$work/boot.img" "$initrd" ::/initrd.img
mcopy -i "$work/boot.img" "$work/syslinux.cfg" ::/syslinux.cfg

# The root partition: ext4 filled from the tree.
rm -f "$work/root/vmlinuz.old" "$work/root/initrd.img.old"
mkfs.ext4 -q -L root -U "$root_uuid" -d "$work/root" "$work/root.img" "${root_mib}M"

# The disk: MBR with syslinux's boot code, partition 1 FAT (active), partition 2 Linux.
disk="$work/disk.raw"
truncate -s $((1 + boot_mib + root_mib))M "$disk"
printf 'label: dos\nstart=1MiB, size=%dMiB, type=c, bootable\nstart=%dMiB, type=83\n' \
    "$boot_mib" $((1 + boot_mib)) | sfdisk --quiet "$disk"
dd if="$mbr" of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot.img" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.img" of="$disk" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none

qemu-img convert -f raw -O qcow2 "$disk" "$out/base.qcow2.tmp"
mv "$out/base.qcow2.tmp" "$out/base.qcow2"
echo "build-base.sh: wrote $out/base.qcow2"
