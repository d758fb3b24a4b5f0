# Two commands on a fresh machine: `make demo` and `make test`. Everything else is plumbing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VFSTREAM := $(VENV)/bin/vfstream
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration lint bench install kafka browser kinesalite dev-up dev-down clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

kafka: $(STAMP)
	$(VFSTREAM) dev fetch-kafka

# Debian's Chromium for the dashboard test (Playwright drives it; its own download can't work).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: run 'sudo apt-get install chromium'"; fi; }

# kinesalite (npm), a Kinesis emulator that reshards like Kinesis, for the Kinesis bridge's
# resharding tests (moto cannot follow writes across a reshard). Those tests fail without it,
# so the install fails loudly too. It goes where DevStackSettings.dev_cache_dir points.
KINESALITE_VERSION := 3.3.3
kinesalite:
	@dir="$${VFSTREAM_DEV_CACHE_DIR:-$$HOME/.cache/vfstream}/kinesalite"; \
	test -f "$$dir/node_modules/kinesalite/package.json" || { \
	  command -v npm >/dev/null || { echo "npm is needed for kinesalite (the resharding tests)"; exit 1; }; \
	  npm install --prefix "$$dir" --no-audit --no-fund --silent kinesalite@$(KINESALITE_VERSION); }

lint: $(STAMP)
	$(VENV)/bin/ruff check vfstream tests bench
	$(VENV)/bin/ruff format --check vfstream tests bench

unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

# The suite starts its own local stack (Kafka + moto) on free ports and stops it at the end.
test: $(STAMP) kafka browser kinesalite
	$(VENV)/bin/ruff check vfstream tests bench
	$(PY) -m pytest -q

# `make demo SECURE=1`: the same on the secured stack (SASL_SSL, SCRAM, ACLs) beside the plain one.
demo: $(STAMP) kafka
	$(PY) -m vfstream.dev.demo $(if $(SECURE),--secure)

bench: $(STAMP) kafka
	$(PY) -m bench.run_all

dev-up: $(STAMP) kafka
	$(VFSTREAM) dev up

dev-down: $(STAMP)
	$(VFSTREAM) dev down

clean:
	-$(VFSTREAM) dev down
	rm -rf .state
