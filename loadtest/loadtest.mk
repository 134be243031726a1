# The load test and the benchmark, included by the top-level Makefile. Both run on demand, never in
# `make test` (its smoke test, tests/test_loadtest.py, is). Results go into loadtest/results/.
#   make loadtest   Locust, headless, against a throwaway stack (LOADTEST_ARGS="--users 100 --seconds 120";
#                   "--cluster": against the cluster demo's nodes, all at once)
#   make bench      the side-by-side benchmark: wrk, Postfix's smtp-source/smtp-sink, Postfix as peer
#                   (BENCH_ARGS="--runs 3"; --only http,smtp,cluster,capacity,erasure picks cases)
#   make cluster-demo  3 tempalias nodes on a Redis Cluster behind nginx, in the foreground until
#                   Ctrl-C, for trying by hand (CLUSTER_DEMO_ARGS="--sentinel --nodes 2")
# Every abuse limit of the service is switched off for both (loadtest/stack.py LIMITS_OFF).

LOADTEST_ARGS ?=
BENCH_ARGS ?=
CLUSTER_DEMO_ARGS ?=
CLUSTER_DEMO_PACKAGES := nginx:nginx redis-cli:redis-tools
BENCH_PACKAGES := wrk:wrk smtp-source:postfix redis-server:redis-server
# Debian's postfix asks how to configure itself and, configured, starts its daemon: "No
# configuration" leaves it unconfigured and stopped; the benchmark runs a private instance only.
POSTFIX_DEBCONF := postfix postfix/main_mailer_type select No configuration

.PHONY: loadtest bench system-bench cluster-demo

loadtest: system-run venv
	$(BIN)/python -m loadtest.run $(LOADTEST_ARGS)

cluster-demo: system-run venv
	@scripts/ensure-system-packages $(CLUSTER_DEMO_PACKAGES)
	$(BIN)/python -m loadtest.cluster_demo $(CLUSTER_DEMO_ARGS)

system-bench:
	@if ! command -v smtp-source >/dev/null 2>&1 && [ "$$(id -u)" -eq 0 ]; then \
		echo "$(POSTFIX_DEBCONF)" | debconf-set-selections; fi
	@scripts/ensure-system-packages $(BENCH_PACKAGES)
	@# In case it was installed configured: the system's Postfix daemon stays stopped.
	@if [ -f /etc/postfix/main.cf ] && postfix status >/dev/null 2>&1; then postfix stop; fi

bench: system-bench venv
	@test -x $(BIN)/py-spy || \
		$(BIN)/pip install --quiet --disable-pip-version-check 'py-spy>=0.3,<0.5'
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)
