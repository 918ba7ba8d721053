# cfrec: `make demo` sets up a virtualenv and runs the nightly DAG on synthetic data;
# `make test` runs the test suite. Both create .venv on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first and on its own: installed as a dependency of the project it would resolve to
# the newest release. Override for another build, e.g. TORCH_SPEC="torch --index-url ...".
TORCH_SPEC ?= torch==2.13.0
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=
# Test processes: the end-to-end services (Airflow, PostgreSQL, a Spark cluster) and the tests that use
# them run in one, the other modules in the rest (tests/conftest.py). TEST_WORKERS=0: all in one process.
TEST_WORKERS ?= 2

.PHONY: setup spark-classes demo lint test airflow stop sql-server sql-server-stop clean check-java

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
	  { echo "cfrec needs Python 3.11 (found $$($(PYTHON) --version)); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[airflow,test]"
	touch $@

# The Spark driver's classes in one class-data-sharing archive (cfmodel/class_archive.py): made once per
# Java and Spark installation, under ~/.cache/cfrec; every Spark step starts on it.
spark-classes: setup check-java
	-@$(BIN)/python -m cfmodel.class_archive >/dev/null

check-java:
	@java -version >/dev/null 2>&1 || { echo "cfrec needs Java 17 for Spark: install a JDK/JRE 17 and put java on PATH"; exit 1; }

# Where the DAGs and the spark-submit jobs of this checkout are (cfrec_airflow.settings).
export CFREC_DAGS_FOLDER ?= $(CURDIR)/dags
export CFREC_JOBS_DIR ?= $(CURDIR)/jobs

demo: setup check-java spark-classes
	$(BIN)/cfrec demo --workdir demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup check-java spark-classes
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

airflow: setup check-java spark-classes
	$(BIN)/cfrec airflow start --home .airflow --data-dir demo

stop:
	$(BIN)/cfrec airflow stop --home .airflow

# The demo warehouse as database cfrec through a JDBC/ODBC endpoint on 127.0.0.1:10000 (README: For analysts).
sql-server: setup check-java
	$(BIN)/cfrec sql-server start --warehouse demo/warehouse

sql-server-stop:
	$(BIN)/cfrec sql-server stop --warehouse demo/warehouse

clean:
	rm -rf demo .pytest_cache build *.egg-info
