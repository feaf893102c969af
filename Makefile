# The two commands: `make run` (a local cluster on loopback) and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
# promtool (checks etc/prometheus/): taken out of Debian's `prometheus` package without
# installing it, which would start a Prometheus server (and, recommended, a node exporter)
# wherever services start on install (docs/metrics.md).
PROMTOOL := $(VENV)/bin/promtool
APT_PACKAGES := kamailio kamailio-python3-modules etcd-server etcd-client memcached sip-tester nftables \
	python3-venv python3-etcd3 python3-lxml python3-pymemcache baresip-core \
	kamailio-presence-modules python3-matplotlib shellcheck

.PHONY: setup run test unit integration e2e lint bench bench-quick soak clean

setup: $(STAMP) $(PROMTOOL)

$(STAMP): pyproject.toml Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(PROMTOOL): $(STAMP)
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); tmp=$$(mktemp -d) && chmod 755 $$tmp && cd $$tmp \
		&& { apt-get download -q prometheus >/dev/null 2>&1 \
			|| { $$SUDO apt-get update -q >/dev/null && apt-get download -q prometheus >/dev/null; }; } \
		&& dpkg-deb -x prometheus_*.deb x && install -m 755 x/usr/bin/promtool $(CURDIR)/$(PROMTOOL); \
	status=$$?; rm -rf $$tmp; exit $$status

run: setup
	$(VENV)/bin/blfctl run

# Unit tests first, in seconds: a broken rule stops here, before the integration and
# end-to-end tests (etcd, Kamailio) start.
test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit
	$(PY) -m pytest -q -p no:cacheprovider tests --ignore tests/unit

# The pure core's tests: no etcd, no Kamailio, no network; seconds.
unit: setup
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: setup
	$(PY) -m pytest -q tests/integration

e2e: setup
	$(PY) -m pytest -q tests/e2e

lint: setup
	$(VENV)/bin/ruff check statestore kemi tests bench
	$(VENV)/bin/mypy

# Our lab and Kamailio's native presence side by side (docs/benchmarks.md), in a network
# namespace of its own when run as root; results in bench/results/. About 1 hour.
bench: setup
	bench/in_netns.sh $(PY) -m bench.run $(BENCH_ARGS)

# The same code for a few seconds on a small workload (also run by `make test`).
bench-quick: setup
	bench/in_netns.sh $(PY) -m bench.run --quick

# Steady calls, registrations and subscriptions that churn, a restart of ks2; fails when a
# figure keeps growing or orphans remain (docs/soak.md). 30 minutes of load by default:
# SOAK_ARGS="--minutes 10" (or --rate N). Results in bench/results/soak-<stamp>.json and .png.
soak: setup
	bench/in_netns.sh $(PY) -m bench.soak $(SOAK_ARGS)

clean:
	-$(VENV)/bin/blfctl lab down
	rm -rf var
