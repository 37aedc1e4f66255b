# The quickstart is two commands: `make run` (the example project) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint docs docs-build screenshots

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python manage.py migrate --noinput
	@# A known login for the example only; never do this in a real project.
	@DJANGO_SUPERUSER_PASSWORD=admin $(BIN)/python manage.py createsuperuser --noinput \
		--username admin --email admin@example.com >/dev/null 2>&1 || true
	@echo "Admin: http://127.0.0.1:8000/admin/ (admin / admin)."
	@echo "Webhook URL (for Morph, or curl): $$($(BIN)/python manage.py morph_webhooks_url http://127.0.0.1:8000)"
	@echo "Send example events from another shell: $(BIN)/python manage.py send_example_events"
	$(BIN)/python manage.py runserver 127.0.0.1:8000

test: install
	$(BIN)/python -m pytest --cov --cov-report=term

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy morph_webhooks
	$(BIN)/lint-imports --no-cache

# The documentation site, rebuilt as pages change; stop it with Ctrl-C.
docs: install
	@echo "Documentation: http://127.0.0.1:8008/"
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8008

# What CI builds: any warning (a broken link, a reference page out of step with the code) fails.
docs-build: install
	$(BIN)/mkdocs build --strict --site-dir site

# The admin's screenshots in the documentation, made again by the browser test (headless Chromium).
screenshots: install
	bash scripts/screenshots.sh
