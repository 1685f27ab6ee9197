# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SYSTEM_STAMP := $(VENV)/.system-stamp
# Debian packages the test suite drives for real: a browser for the UI tests, Alertmanager, wrk for load,
# PostgreSQL for the production-profile event log, Redis for the Celery work.
SYSTEM_PACKAGES := chromium prometheus-alertmanager wrk postgresql redis-server

# Telemetry of Dagster, MLflow and Evidently is switched off in one place: mlplatform/__init__.py (TELEMETRY_OFF),
# which every command, server and run imports first; dg's own through the venv (the install step writing .venv/dg.toml).

.PHONY: install system-deps demo test dev prod serve bench lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'uv==0.9.*'
	# --compile-bytecode: .pyc files written once here; with PYTHONDONTWRITEBYTECODE set (as on these machines) every
	# process (a CLI call, each Dagster run worker and code server) would otherwise compile Dagster, MLflow and pandas again.
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	# The project's own modules too: an editable install compiles none, and each run worker imports some fifty of them.
	# A module edited later is compiled in memory again (its .pyc is stale), as before.
	$(BIN)/python -m compileall -q mlplatform
	# dg takes its telemetry switch from its user config file alone (DG_CLI_CONFIG, else ~/.config/dg.toml), never from
	# pyproject.toml or the environment: every interpreter of the venv points DG_CLI_CONFIG, unless set, at .venv/dg.toml.
	printf '[cli]\ntelemetry = { enabled = false }\n' > $(VENV)/dg.toml
	echo "import os; os.environ.setdefault('DG_CLI_CONFIG', '$(abspath $(VENV))/dg.toml')" \
	  > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/mlplatform-dg-telemetry.pth"
	touch $@

install: $(STAMP)

# Installs what is missing; where apt cannot (no root, no registry) the tests that need it skip and say why.
$(SYSTEM_STAMP):
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) || echo "apt-get failed; tests needing$$missing will skip"; \
	  else echo "not root: cannot install$$missing; tests needing them will skip"; fi; \
	fi
	@mkdir -p $(VENV) && touch $@

system-deps: $(SYSTEM_STAMP)

demo: install
	$(BIN)/mlplatform demo

test: install system-deps
	$(BIN)/pytest -n 2 --dist loadfile -q mlplatform_tests

dev: install
	$(BIN)/mlplatform dev

# The same stack on real engines: PostgreSQL stores, Celery workers on Redis, the prediction service (docs/production.md).
prod: install system-deps
	$(BIN)/mlplatform dev --profile production

serve: install
	$(BIN)/mlplatform serve

bench: install system-deps
	$(BIN)/python benchmarks/run_all.py

# Regenerate requirements.lock after changing dependencies in pyproject.toml.
lock:
	$(BIN)/uv pip compile --quiet --python-version 3.11 --extra dev --extra bench pyproject.toml -o requirements.lock

clean:
	rm -rf $(VENV) .mlplatform .pytest_cache
