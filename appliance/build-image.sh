#!/bin/sh
# Build the appliance image: the base Debian 12 disk (build-base.sh), the project's Python wheels
# (built here, because the guest cannot reach PyPI over HTTPS, and so that the image is
# reproducible), then Packer boots the base with qemu, runs provision.sh and seals the result.
#
# Usage: appliance/build-image.sh [OUTPUT_DIR]        (default build/image)
#   writes OUTPUT_DIR/tempalias.qcow2, OUTPUT_DIR/accel (kvm or tcg) and OUTPUT_DIR/timings
# Environment:
#   TEMPALIAS_ACCEL=kvm|tcg   skip the KVM probe and use this accelerator
#   TEMPALIAS_REUSE_BASE=1    keep an existing OUTPUT_DIR/base.qcow2 (faster rebuilds)
#   TEMPALIAS_WHEEL_PYTHON    the Python that resolves and builds the wheels (default
#                             /usr/bin/python3): it must be Debian 12's, the guest's, 3.11.2
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/build/image}
mkdir -p "$out"
out=$(cd "$out" && pwd)
# The wheels are resolved by the guest's own Python (Debian 12's python3, 3.11.2), so that
# environment markers (redis needs async-timeout below 3.11.3) and binary tags come out as there.
python=${TEMPALIAS_WHEEL_PYTHON:-/usr/bin/python3}
export CHECKPOINT_DISABLE=1 PACKER_CACHE_DIR="$out/packer_cache"

now() { date +%s; }
started=$(now)
: > "$out/timings"
timing() { echo "$1 $(($(now) - $2))" >> "$out/timings"; echo "build-image.sh: $1 took $(($(now) - $2)) s"; }

"$python" -c 'import sys; sys.exit(sys.version_info[:3] != (3, 11, 2))' || {
    echo "build-image.sh: $python is not Python 3.11.2 (Debian 12's); set TEMPALIAS_WHEEL_PYTHON" >&2
    exit 1
}

# --- 1. the base image
step=$(now)
if [ "${TEMPALIAS_REUSE_BASE:-0}" = 1 ] && [ -f "$out/base.qcow2" ] && [ -f "$out/build-key" ]; then
    echo "build-image.sh: reusing $out/base.qcow2"
else
    rm -f "$out/base.qcow2"
    "$src/appliance/build-base.sh" "$out"
fi
timing base "$step"

# --- 2. KVM when it works, else TCG. A guest that reaches its login prompt under KVM proves it;
# where nested virtualisation is broken, KVM stops with an internal error instead.
step=$(now)
accel=${TEMPALIAS_ACCEL:-}
if [ -z "$accel" ]; then
    accel=tcg
    if [ -w /dev/kvm ]; then
        probe_log="$out/kvm-probe.log"
        : > "$probe_log"
        qemu-system-x86_64 -accel kvm -m 512 -display none -nodefaults -nic none -snapshot \
            -serial "file:$probe_log" -drive "file=$out/base.qcow2,if=virtio" \
            > "$probe_log.stderr" 2>&1 &
        probe=$!
        waited=0
        while [ $waited -lt 40 ] && kill -0 "$probe" 2>/dev/null; do
            if grep -q "login:" "$probe_log"; then accel=kvm; break; fi
            if grep -q "KVM internal error" "$probe_log.stderr"; then break; fi
            sleep 1
            waited=$((waited + 1))
        done
        kill "$probe" 2>/dev/null || true
        wait "$probe" 2>/dev/null || true
    fi
fi
echo "$accel" > "$out/accel"
echo "build-image.sh: accelerator $accel"
timing accel-probe "$step"

# --- 3. the payload: the project's files and its wheels
step=$(now)
rm -rf "$out/payload" "$out/payload.tar.gz"
mkdir -p "$out/payload/wheels"
rm -rf "$out/wheel-venv"
"$python" -m venv "$out/wheel-venv"
"$out/wheel-venv/bin/pip" install --quiet --disable-pip-version-check wheel
"$out/wheel-venv/bin/pip" wheel --quiet --disable-pip-version-check \
    --wheel-dir "$out/payload/wheels" "$src" setuptools wheel
rm -rf "$out/wheel-venv"
readme=""
[ -f "$src/README.md" ] && readme=README.md
# shellcheck disable=SC2086
tar -czf "$out/payload.tar.gz" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    --exclude=node_modules -C "$src" setup.py tempalias static extension appliance systemd packer $readme \
    -C "$out/payload" wheels
rm -rf "$out/payload"
timing payload "$step"

# --- 4. Packer: boot the base, provision, seal
step=$(now)
rm -rf "$out/packer-out" "$out/tempalias.qcow2"
packer build -color=false \
    -var "base_image=$out/base.qcow2" -var "build_key=$out/build-key" \
    -var "payload=$out/payload.tar.gz" -var "output_directory=$out/packer-out" \
    -var "accelerator=$accel" "$src/packer/tempalias.json"
mv "$out/packer-out/tempalias.qcow2" "$out/tempalias.qcow2"
rm -rf "$out/packer-out"
timing packer "$step"
timing total "$started"
echo "build-image.sh: wrote $out/tempalias.qcow2"
