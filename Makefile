# The two commands of the README: `make run` serves the API, `make test` tests it.
# Both build the same virtualenv from the pinned requirements; neither needs Docker.

PYTHON ?= python3
VENV := $(CURDIR)/.venv
CODE := $(CURDIR)/ThoughtsBackend
PORT ?= 8000
export PORT

# The virtualenv is rebuilt when a requirements file, or uWSGI's build, changes. uWSGI
# first: the image's, built from its pinned release with docker/app/uwsgi/'s patches.
UWSGI_BUILD := $(wildcard docker/app/uwsgi/*)
$(VENV)/.installed: ThoughtsBackend/requirements.txt ThoughtsBackend/requirements-test.txt requirements-dev.txt $(UWSGI_BUILD)
	$(PYTHON) -m venv $(VENV)
	sh docker/app/uwsgi/install.sh $(VENV)/bin/pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: install run test lint token bench test-faults test-browser test-idp test-scaleout test-container test-compose validate-kubernetes
install: $(VENV)/.installed

# The container's own start_server.sh and uwsgi.ini, with host paths. The run directory
# (FIFO, pidfile, sockets) is one per port, so runs on other ports don't stop each other.
run: install
	cd $(CODE) && PATH="$(VENV)/bin:$$PATH" UWSGI_RUN_DIR="$(CURDIR)/run/$(PORT)" \
		exec sh $(CURDIR)/docker/app/start_server.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The suite (SQLite and PostgreSQL), in minutes; the long runs below have their own targets.
test: lint
	cd $(CODE) && $(VENV)/bin/python -m pytest -m "not container and not compose and not scaleout and not browser and not faults and not idp"

# Three uWSGI instances behind HAProxy, restarted one by one under load, connected to PostgreSQL
# directly, then through PgBouncer (about 3 minutes; needs haproxy and pgbouncer).
test-scaleout: install
	cd $(CODE) && $(VENV)/bin/python -m pytest -m scaleout

# Outages, killed workers, harakiri, full disk, SIGTERM durability and API fuzzing against
# the real server under uWSGI (about 7 minutes; needs root for tmpfs mounts and
# PostgreSQL's server binaries for a private instance).
test-faults: install
	cd $(CODE) && $(VENV)/bin/python -m pytest -m faults

# Swagger UI in Debian's Chromium, driven by Playwright (playwright-core from npm, the
# lockfile's version; never a downloaded browser). Needs `apt-get install chromium`.
test-browser: install
	npm ci --prefix browser --no-audit --no-fund
	cd $(CODE) && $(VENV)/bin/python -m pytest -m browser

# The served service against a real OpenID provider on loopback: panva's oidc-provider from
# npm (the lockfile's version in oidc/), issuing JWT access tokens (about 1 minute; needs node).
test-idp: install
	npm ci --prefix oidc --no-audit --no-fund
	cd $(CODE) && $(VENV)/bin/python -m pytest -s -m idp

# Builds the glibc image on a debootstrap base, runs it, stops it under load (needs root and
# docker.io, debootstrap; it starts dockerd itself when none runs).
test-container: install
	cd $(CODE) && $(VENV)/bin/python -m pytest -m container

# The README's docker-compose commands, line by line as written, with the glibc variant and
# a PostgreSQL stand-in for db (no registry here): the suite inside the image on SQLite and
# PostgreSQL, the server, a stop under load, down and up (needs what test-container needs,
# docker-compose, and port 8000; about 10 minutes).
test-compose: install
	cd $(CODE) && $(VENV)/bin/python -m pytest -m compose

# Every manifest in deploy/kubernetes/ against the Kubernetes 1.37 schemas (also run by make test).
validate-kubernetes: install
	$(VENV)/bin/kubernetes-validate --strict -k 1.37.0 $(filter-out %/kustomization.yaml,$(wildcard deploy/kubernetes/*.yaml))

# A token for the keys that `make run` made: TOKEN=$$(make -s token USERNAME=alice [ADMIN=1])
USERNAME ?= alice
token: install
	@cd $(CODE) && $(VENV)/bin/python -m thoughts_backend create-token "$(USERNAME)" $(if $(ADMIN),--admin)

# The benchmark of benchmarks/README.md: about 14 minutes; PostgreSQL runs when
# 127.0.0.1:5432 answers. Never part of `make test`. BENCH_ARGS="--duration 3" for a quick look.
bench: install
	$(VENV)/bin/python benchmarks/run_benchmarks.py $(BENCH_ARGS)
