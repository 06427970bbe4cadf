# Set-up and entry points. Both targets are idempotent: stamps in .venv record what is installed
# (and are redone when pyproject.toml changes), so a second run installs nothing.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
CPU_STAMP := $(VENV)/.flywheel-cpu
DEV_STAMP := $(VENV)/.flywheel-dev

.PHONY: webgym test install chromium prometheus monitor lint

webgym: install chromium
	$(PY) launch/cluster.py +exp=webgym

# PYTHONFAULTHANDLER: a crash (also at interpreter exit, after pytest's own handler is gone)
# prints every thread's stack instead of a bare "Segmentation fault".
test: $(DEV_STAMP) chromium prometheus
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q

# Prometheus scraping the newest run's Ray metrics (launch/monitor.py), until Ctrl-C. Options:
# make monitor MONITOR_ARGS="--run-dir runs/<time> --port 9091"
MONITOR_ARGS ?=
monitor: prometheus | $(PY)
	$(PY) launch/monitor.py $(MONITOR_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check actors buffer learner rewards weights launch tests bench

install: $(CPU_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(CPU_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -e '.[cpu]'
	$(PY) -m pip uninstall -y torchvision torchaudio torchcodec triton
	touch $@

# Only the dev extra here: naming `cpu` again would make pip reinstall what we removed above.
$(DEV_STAMP): $(CPU_STAMP)
	$(PY) -m pip install -e '.[dev]'
	touch $@

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else echo "Chromium is missing. Run: sudo apt-get install -y chromium"; exit 1; fi; }

prometheus:
	@command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq prometheus; \
	  else echo "Prometheus is missing. Run: sudo apt-get install -y prometheus"; exit 1; fi; }
