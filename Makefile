# unioncard: every target sets up what it needs (system packages, .venv) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_STAMP := $(VENV)/.system-packages
TEST_SYSTEM_STAMP := $(VENV)/.test-system-packages
DEB_PACKAGES := pcscd vsmartcard-vpcd libpcsclite-dev
# The tests also sweep the simulated card with a third-party EMV reader.
TEST_DEB_PACKAGES := cardpeek
# 2-core CI: one pytest worker per core.
PYTEST_WORKERS ?= auto

.PHONY: demo test bench lint system-packages venv clean

demo: $(STAMP)
	$(BIN)/unioncard demo

test: $(STAMP) $(TEST_SYSTEM_STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) tests
	$(MAKE) -C examples/pyscard-terminal test UNIONCARD_VENV=$(abspath $(VENV))

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks -p no:xdist --benchmark-only \
		--benchmark-columns=min,median,max,ops --benchmark-sort=name

lint: $(STAMP)
	$(BIN)/ruff check unioncard tests benchmarks
	$(BIN)/mypy

venv: $(STAMP)

# Debian packages for PC/SC: pcscd, the vpcd virtual reader driver, and the
# pcsc-lite headers pyscard builds against. Installed only when missing.
system-packages: $(SYSTEM_STAMP)

# Debian packages, installed only when missing: $(call apt_install,PACKAGES)
define apt_install
	@missing=""; \
	for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		export DEBIAN_FRONTEND=noninteractive; \
		$$SUDO apt-get install -y -q $$missing || \
		{ $$SUDO apt-get update -q && $$SUDO apt-get install -y -q $$missing; } || exit 1; \
	fi
	@mkdir -p $(VENV) && touch $@
endef

$(SYSTEM_STAMP):
	$(call apt_install,$(DEB_PACKAGES))

$(TEST_SYSTEM_STAMP):
	$(call apt_install,$(TEST_DEB_PACKAGES))

$(STAMP): pyproject.toml $(SYSTEM_STAMP)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
