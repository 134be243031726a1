# The appliance's make targets, included by the top-level Makefile.
#   make image       the base Debian 12 disk and the appliance image: build/image/tempalias.qcow2
#   make test-image  builds the image and boots it under qemu to test it (tests/test_image.py)
# Both need root (mmdebstrap, file ownership in the image) and 10 to 20 minutes under TCG.

IMAGE_DIR := build/image
# COMMAND:DEBIAN_PACKAGE pairs for building and booting the image.
IMAGE_PACKAGES := mmdebstrap:mmdebstrap qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils \
	syslinux:syslinux mcopy:mtools mkfs.vfat:dosfstools sfdisk:fdisk mkfs.ext4:e2fsprogs \
	packer:packer ssh-keygen:openssh-client
SYSLINUX_MBR := /usr/lib/syslinux/mbr/mbr.bin

.PHONY: image test-image system-image

system-image:
	@scripts/ensure-system-packages $(IMAGE_PACKAGES)
	@# syslinux's MBR boot code has no command to look for: install its package when it is missing
	@test -r $(SYSLINUX_MBR) || scripts/ensure-system-packages missing-syslinux-mbr:syslinux-common

image: system-image venv
	appliance/build-image.sh $(IMAGE_DIR)

test-image: system-image system-test venv
	TEMPALIAS_TEST_IMAGE=1 $(BIN)/python -m pytest -s -rs tests/test_image.py $(PYTEST_ARGS)

# `TEMPALIAS_TEST_IMAGE=1 make test` (and so .ci/run) runs the image test with the rest: it then
# needs the image tools too.
ifeq ($(TEMPALIAS_TEST_IMAGE),1)
system-test: system-image
endif
