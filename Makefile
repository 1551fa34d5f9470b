# The two commands a new machine needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CATALOG ?= ../shared/datasets/grocery-store
HOST ?= 127.0.0.1:8000
# The quick start: SQLite, tasks in-process, debug pages.
DEV_ENV := DJANGO_DEBUG=1

.PHONY: run test install weights clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

weights: install
	$(PY) -m vision.weights

run: install weights
	$(DEV_ENV) $(PY) manage.py migrate --noinput
	$(DEV_ENV) $(PY) manage.py demo_setup --catalog "$(CATALOG)"
	$(DEV_ENV) $(PY) manage.py runserver $(HOST)

# The whole suite, on the PostgreSQL and Redis that the run starts itself (tests/services.py).
test: install weights
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3 media staticfiles .pytest_cache
