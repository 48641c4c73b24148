# The two commands: `make run` (everything, one URL to open) and `make test` (lint and the suite).
# Both need only Python 3.11+ on a fresh machine; the virtualenv lives in .venv.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export GUNICORN_BIND ?= 127.0.0.1:$(PORT)

# The browser test (tests/payments/test_browser.py) drives Debian's Chromium through Playwright.
CHROMIUM := /usr/bin/chromium

.PHONY: run screenshots test test-dynamodb test-dynamodb-local install lint format migrate seed chromium compose-check clean

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
	@echo "  Payments:  Stripe stand-in (localstripe) on $(or $(STRIPE_API_BASE),http://127.0.0.1:8420), webhooks to this app"
	@echo "             test card 4242 4242 4242 4242 pays, 4000 0000 0000 0341 is declined,"
	@echo "             4000 0000 0000 5126 pays but its refunds fail a moment later"
	@echo "             (spaces or not; any future expiry such as 12 / 34, any CVC and ZIP/postal code)"
	@echo "  Ops:       http://$(GUNICORN_BIND)/ops/   (staff; Prometheus text at /metrics)"
	@echo "  Fan-out:   email inbox http://127.0.0.1:8425/   analytics sheet http://127.0.0.1:8426/"
	@echo "             SNS inbox http://127.0.0.1:8427/_inbox/ (topics cis-order-events and cis-ops-alerts,"
	@echo "             demo queues cis-order-events-demo, cis-ops-alerts-demo); logs and metrics to CloudWatch on moto"
	@echo ""
	PATH="$(CURDIR)/$(BIN):$$PATH" CLOUDWATCH_LOGS_ENABLED=$(or $(CLOUDWATCH_LOGS_ENABLED),true) \
		CLOUDWATCH_METRICS_ENABLED=$(or $(CLOUDWATCH_METRICS_ENABLED),true) $(BIN)/honcho start -f Procfile

# The README's screenshots (docs/<page>-1280.png and -390.png: shop, payment page, order page, admin
# order page, /ops/), taken in headless Chromium from a copy of `make run`'s processes that the
# script starts on free ports with a throwaway database. Not part of `make test` (a minute or so).
screenshots: install chromium
	$(BIN)/python -m tools.screenshots --out docs

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The whole suite again with orders in DynamoDB, on a moto server the suite starts itself; left
# out: only the tests about the ORM adapter itself (marker orm_only).
test-dynamodb: install chromium
	ORDER_REPOSITORY=dynamodb $(BIN)/python -m pytest -m "not orm_only" $(PYTEST_ARGS)

# The repository contract suite against DynamoDB Local (real DynamoDB's validation), run with its
# client in a private network namespace because it cannot listen on loopback only (root).
test-dynamodb-local: install
	bin/test-dynamodb-local $(PYTEST_ARGS)

# Installs Chromium when it is missing and we may (root, with apt-get); fails saying how otherwise.
chromium:
	@if [ ! -x $(CHROMIUM) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Chromium for the browser test: apt-get install chromium"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "apt-get could not install chromium" >&2; \
	fi
	@if [ ! -x $(CHROMIUM) ]; then \
		echo "The browser test needs Chromium at $(CHROMIUM). Install Debian's package as root:" >&2; \
		echo "    apt-get update && apt-get install chromium" >&2; \
		exit 1; \
	fi

# `docker compose config` validates docker-compose.yml (Compose v2, or Debian's docker-compose).
# The file requires the secret variables; throwaway values stand in for them here only.
compose-check: export DJANGO_SECRET_KEY ?= compose-check-only-not-a-secret
compose-check: export DJANGO_ALLOWED_HOSTS ?= localhost
compose-check: export STRIPE_SECRET_KEY ?= sk_test_compose_check
compose-check: export STRIPE_PUBLISHABLE_KEY ?= pk_test_compose_check
compose-check: export STRIPE_WEBHOOK_SECRET ?= whsec_compose_check
compose-check: export SENDGRID_API_KEY ?= SG.compose_check
compose-check: export GOOGLE_SERVICE_ACCOUNT_JSON ?= {}
compose-check:
	@if docker compose version >/dev/null 2>&1; then docker compose config --quiet; \
	elif command -v docker-compose >/dev/null 2>&1; then docker-compose config --quiet; \
	else echo "neither 'docker compose' nor 'docker-compose' is installed" >&2; exit 1; fi
	@echo "docker-compose.yml is valid"

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
