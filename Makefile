# finops — every target uses the project's own .venv and the services it starts itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_SYS ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
MANAGE := $(PY) manage.py
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: screenshots help install services stop migrate seed run test smoke lint bench eval docs-check drill chaos chaos-saturation soak tools clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON_SYS) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned requirements

services: install ## start embedded Postgres 16 + pgvector and Redis (idempotent); writes .finops/env
	$(PY) -m finops.services start

stop: ## stop what `make services` started
	@if [ -x $(PY) ]; then $(PY) -m finops.services stop; fi

migrate: services
	$(MANAGE) migrate --noinput -v 0

seed: migrate ## migrate, then seed the demo workload (skipped when already seeded) and backfill its anomalies
	$(MANAGE) seed_demo --incident-scale 40
	$(MANAGE) seed_anomalies
	$(MANAGE) rollup_routes --all
	$(MANAGE) ensure_demo_users

run: seed ## everything: venv, deps, DB, migrate, seed, API + worker + beat (+ mock LLM), Prometheus + Alertmanager, prints the URLs
	$(PY) -m finops.runner

tools: ## best-effort: Debian packages `make run` and some tests use (prometheus, prometheus-alertmanager, chromium, wrk, faketime)
	@missing=""; \
	for pair in chromium:chromium wrk:wrk prometheus:prometheus promtool:prometheus prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager redis-server:redis-server faketime:faketime; do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) \
	    || echo "apt-get failed; tests that need$$missing will skip"; \
	fi; true

smoke: services ## the quick check (< 1 min): 13 end-to-end checks on a seeded month, live gateway, mock LLM, Alertmanager
	$(PY) -m pytest -p no:cacheprovider -v finops/tests/test_smoke.py

screenshots: services tools ## re-take the browser tests' screenshots into docs/img/ (make test keeps them in a temporary folder)
	FINOPS_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -p no:cacheprovider -q apps/reports/tests/test_browser.py apps/budgets/tests/test_admin_browser.py

lint: install
	$(VENV)/bin/ruff check .
	$(PY) -m mypy .

test: services tools ## the whole suite: ruff, mypy, makemigrations --check, pytest on real Postgres/Redis/mock LLM
	$(VENV)/bin/ruff check .
	$(PY) -m mypy .
	$(MANAGE) makemigrations --check --dry-run
	$(PY) -m pytest -q -p no:cacheprovider

# BENCH_ONLY=gateway[,cache,...] runs only those benchmarks; the gateway one also reads BENCH_TARGETS,
# BENCH_SCENARIOS and BENCH_DURATION (bench/bench_gateway.py) and installs LiteLLM under .finops/ on first use.
comma := ,
BENCHES := ledger anomalies budgets cache semantic reports dashboard_cache gateway
export BENCH_TARGETS BENCH_SCENARIOS BENCH_DURATION
bench: services tools ## benchmarks (BENCH_ONLY=gateway,... for some); results go to docs/benchmarks.md
	@set -e; for b in $(or $(subst $(comma), ,$(BENCH_ONLY)),$(BENCHES)); do \
	  case " $(BENCHES) " in *" $$b "*) ;; *) echo "unknown benchmark $$b (one of: $(BENCHES))"; exit 2;; esac; \
	  echo "== $$b"; \
	  if [ $$b = gateway ]; then $(PY) bench/bench_gateway.py --profile; \
	  elif [ $$b = semantic ]; then $(MANAGE) bench_semantic; \
	  else $(PY) bench/bench_$$b.py; fi; \
	done

eval: seed ## evaluations (cache threshold, router, anomalies, cost model) on the full sets vendored in fixtures/ (the cost model measures its cache rates on the seeded ledger)
	$(MANAGE) eval_anomalies
	$(MANAGE) eval_cache
	$(MANAGE) eval_router --full-if-available --learned --bench
	$(MANAGE) cost_model --refresh --reconcile

docs-check: install ## every figure in README.md and docs/ is generated or matches its named output by key; no dead paths
	$(PY) bench/doc_numbers.py

drill: seed ## cost-incident drill: inject a runaway loop, run the scan, walk the runbook's queries (rolled back)
	$(MANAGE) drill

chaos: services tools ## chaos under load (Redis, upstream faults, Postgres down/hung, Celery and gateway workers killed, saturation); results to docs/reliability.md
	$(PY) bench/chaos.py

chaos-saturation: services tools ## healthy database, 2 workers, 64 connections for 60 s: 0 fail-open, 0 budget 429 (prints, does not write docs)
	$(PY) bench/chaos.py --only saturation --no-write

soak: services tools ## 10 minutes at 50 req/s: zero errors, zero lost rows, worker RSS growth <= 10 % (not part of make test)
	$(PY) bench/chaos.py --soak 10 --rate 50

clean: stop ## stop services and delete .finops (databases included)
	rm -rf .finops
