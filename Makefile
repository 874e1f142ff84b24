# The two commands of the README: `make run` serves the API, `make test` tests it.
# Both build the same virtualenv from the pinned requirements; neither needs Docker.

PYTHON ?= python3
VENV := $(CURDIR)/.venv
CODE := $(CURDIR)/ThoughtsBackend
PORT ?= 8000
export PORT

# The virtualenv is rebuilt when a requirements file changes.
$(VENV)/.installed: ThoughtsBackend/requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: install run test lint token
install: $(VENV)/.installed

# The container's own start_server.sh and uwsgi.ini, with host paths: one run path.
run: install
	cd $(CODE) && PATH="$(VENV)/bin:$$PATH" UWSGI_RUN_DIR="$(CURDIR)/run" \
		exec sh $(CURDIR)/docker/app/start_server.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	cd $(CODE) && $(VENV)/bin/python -m pytest -m "not container"

# A token for the keys that `make run` made: TOKEN=$$(make -s token USERNAME=alice [ADMIN=1])
USERNAME ?= alice
token: install
	@cd $(CODE) && $(VENV)/bin/python -m thoughts_backend create-token "$(USERNAME)" $(if $(ADMIN),--admin)
