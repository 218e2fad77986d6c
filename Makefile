# Two commands do all the set-up: `make up` runs the cloud, `make test` runs every test.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: up test lint unit functional acceptance system bench clean

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || (sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$sudo apt-get update -q && $$sudo apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV))
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

up: $(BIN)/.installed
	@bash scripts/setup-runtime.sh
	$(BIN)/onestack up $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check onestack tests bench
	$(BIN)/ruff format --check onestack tests bench
	$(BIN)/mypy onestack

test: $(BIN)/.installed
	bash scripts/setup-runtime.sh
	bash scripts/setup-test-services.sh
	$(MAKE) lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit functional acceptance system: $(BIN)/.installed
	$(BIN)/pytest tests/$@ $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python bench/identity_tokens.py

clean:
	rm -rf $(VENV) .onestack
