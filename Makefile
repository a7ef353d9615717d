# mlopsctl developer entry points. Two commands matter on a fresh machine:
#   make demo   install everything, start the embedded stack, run build_model end to end, print its metrics
#   make test   install everything and run the whole test suite (unit + integration on the real local stack)

SHELL := /bin/bash
PYTHON ?= python3
# uv from PATH, else bootstrapped with pip (uv is on PyPI) and run as a module.
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --locked --extra local

.PHONY: setup java demo test test-fast bench bench-quick lint stop clean

setup:
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --locked --extra local --compile-bytecode

java:
	@command -v java >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Java not found: installing openjdk-17-jre-headless (needed by Spark)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; \
	  else echo "Spark needs Java 17: install it (e.g. 'sudo apt-get install openjdk-17-jre-headless' or 'brew install openjdk@17') and re-run." >&2; exit 1; fi; }

demo: setup java
	$(RUN) mlopsctl dev start
	$(RUN) mlopsctl run build-model --max-depth 80 --n-estimators 100

test: setup java
	$(RUN) pytest

test-fast: setup
	$(RUN) pytest -m "not integration"

bench: setup java
	$(RUN) python -m bench

bench-quick: setup java
	$(RUN) python -m bench --quick

lint: setup
	$(RUN) ruff check mlopsctl dags spark_jobs tests bench
	$(RUN) hadolint Dockerfile

stop:
	$(RUN) mlopsctl dev stop

clean: stop
	rm -rf .mlopsctl
