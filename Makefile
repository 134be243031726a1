# The two set-up commands of the README: `make run` and `make test`. Each installs what is
# missing (Debian packages when run as root, a virtualenv with the Python dependencies) first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.py | cksum | cut -d' ' -f1)

RUN_PACKAGES := redis-server:redis-server python-venv:python3-venv
# What the test suite needs, one line per part of the project (COMMAND:DEBIAN_PACKAGE pairs).
SMTP_TEST_PACKAGES := swaks:swaks openssl:openssl
FRONTEND_TEST_PACKAGES := chromium:chromium npm:npm
ABUSE_TEST_PACKAGES :=
APPLIANCE_TEST_PACKAGES := nginx:nginx shellcheck:shellcheck supervisord:supervisor packer:packer \
	systemd-analyze:systemd nft:nftables openssl:openssl redis-cli:redis-tools ssh-keygen:openssh-client \
	promtool:prometheus
TEST_PACKAGES := $(RUN_PACKAGES) $(SMTP_TEST_PACKAGES) $(FRONTEND_TEST_PACKAGES) \
	$(ABUSE_TEST_PACKAGES) $(APPLIANCE_TEST_PACKAGES)

.PHONY: run test venv system-run system-test frontend-node clean

run: system-run venv
	$(BIN)/tempalias serve

test: system-test venv frontend-node
	$(BIN)/python -m pytest $(PYTEST_ARGS)

venv: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

# JavaScript the tests use (axe-core, which the browser tests inject; web-ext, which lints the
# extension's Firefox build), pinned by its lock file, kept in a git-ignored node_modules beside it.
FRONTEND_NODE := tests/frontend_node
frontend-node: $(FRONTEND_NODE)/node_modules/.installed

$(FRONTEND_NODE)/node_modules/.installed: $(FRONTEND_NODE)/package.json $(FRONTEND_NODE)/package-lock.json
	npm ci --prefix $(FRONTEND_NODE) --no-audit --no-fund --loglevel=error
	touch $@

system-run:
	@scripts/ensure-system-packages $(RUN_PACKAGES)

system-test:
	@scripts/ensure-system-packages $(TEST_PACKAGES)

clean:
	rm -rf $(VENV) var build *.egg-info

# The appliance's targets (image, test-image) live beside its files.
-include appliance/appliance.mk

# The load test, benchmark and cluster demo targets (loadtest, bench, cluster-demo) live beside
# their files.
-include loadtest/loadtest.mk
