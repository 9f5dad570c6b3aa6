# tickflow: `make run` starts the embedded stack, `make test` runs the whole suite.
# Both create .venv and install what they need; re-running installs nothing new.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint bench setup system-deps clean stop

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing tickflow and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@{ $(PY) -m pip install --upgrade pip && $(PY) -m pip install -e '.[dev]'; } \
	  > $(VENV)/install.log 2>&1 || { tail -30 $(VENV)/install.log; exit 1; }
	@rm -f $(VENV)/.installed-*
	@touch $@

# redis-server is the one service not on PyPI: install it from Debian's packages if absent.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing it (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

run: setup
	$(PY) -m scripts.start_system $(ARGS)

stop: setup
	$(PY) -m scripts.stop_system

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: setup
	$(PY) -m bench.bench_decoder
	$(PY) -m bench.bench_ingestor
	$(PY) -m bench.bench_market_simulator
	$(PY) -m bench.bench_tick_hop
	$(PY) -m bench.bench_indicators
	$(PY) -m bench.bench_greeks
	$(PY) -m bench.bench_migration

clean:
	rm -rf $(VENV) .tickflow .pytest_cache .mypy_cache .ruff_cache
