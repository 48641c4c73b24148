# The two commands: `make run` (everything, one URL to open) and `make test` (lint and the suite).
# Both need only Python 3.11+ on a fresh machine; the virtualenv lives in .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export GUNICORN_BIND ?= 127.0.0.1:$(PORT)

.PHONY: run test install lint format migrate seed compose-check clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.txt requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

install: $(VENV)/.installed

migrate: install
	$(BIN)/python manage.py migrate --noinput

seed: migrate
	$(BIN)/python manage.py seed_demo

run: seed
	@echo ""
	@echo "  Shop:      http://$(GUNICORN_BIND)/"
	@echo "  Admin:     http://$(GUNICORN_BIND)/admin/   (login: admin / admin-demo-password)"
	@echo "  API docs:  http://$(GUNICORN_BIND)/api/docs/"
	@echo "  Customer:  customer / customer-demo-password"
	@echo ""
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# `docker compose config` validates docker-compose.yml (Compose v2, or Debian's docker-compose).
# The file requires the secret variables; throwaway values stand in for them here only.
compose-check: export DJANGO_SECRET_KEY ?= compose-check-only-not-a-secret
compose-check: export DJANGO_ALLOWED_HOSTS ?= localhost
compose-check: export STRIPE_SECRET_KEY ?= sk_test_compose_check
compose-check: export STRIPE_PUBLISHABLE_KEY ?= pk_test_compose_check
compose-check: export STRIPE_WEBHOOK_SECRET ?= whsec_compose_check
compose-check:
	@if docker compose version >/dev/null 2>&1; then docker compose config --quiet; \
	elif command -v docker-compose >/dev/null 2>&1; then docker-compose config --quiet; \
	else echo "neither 'docker compose' nor 'docker-compose' is installed" >&2; exit 1; fi
	@echo "docker-compose.yml is valid"

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
