PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint proto proto-lint quality quality-real ceiling clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the whole test suite (the command CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest -q

## Simulate → features → feast apply → materialize → train → serve → score.
demo: $(STAMP)
	$(BIN)/nudge demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy nudge service training tests loadtest
	$(BIN)/lint-imports

## Regenerate nudge/v1 from proto/ (never edit the generated files by hand).
proto: $(STAMP)
	$(BIN)/python -m nudge.protogen && touch nudge/v1/__init__.py

clean:
	rm -rf data models quality quality-real feature_repo/data .pytest_cache .mypy_cache .ruff_cache

proto-lint:
	cd proto && npx --yes @bufbuild/buf lint

## The quality table in README: 20k customers x 180 days, every step timed; then one campaign
## day planned at the end of the history (the newest snapshot) and valued by the simulator's truth.
QUALITY := quality
# The newest snapshot: the first midnight (UTC) after the last event of the events file argv[1].
define HISTORY_END
import sys, pandas as pd
last = pd.read_parquet(sys.argv[1], columns=["event_timestamp"])["event_timestamp"].max()
print((last.floor("D") + pd.Timedelta(days=1)).isoformat())
endef
export HISTORY_END
quality: $(STAMP)
	rm -rf $(QUALITY) && mkdir -p $(QUALITY)/repo/data
	cp feature_repo/definitions.py feature_repo/feature_store.yaml $(QUALITY)/repo/
	time $(BIN)/nudge simulate --customers 20000 --days 180 --seed 7 --out $(QUALITY)/data
	time $(BIN)/nudge features --events $(QUALITY)/data/events.parquet --customers $(QUALITY)/data/customers.parquet --repo $(QUALITY)/repo
	$(BIN)/feast -c $(QUALITY)/repo apply
	time $(BIN)/nudge train --repo $(QUALITY)/repo --out $(QUALITY)/models --events $(QUALITY)/data/events.parquet \
		--customers $(QUALITY)/data/customers.parquet --truth $(QUALITY)/data/truth.parquet
	time $(BIN)/nudge score-audience --repo $(QUALITY)/repo --models $(QUALITY)/models \
		--as-of "$$($(BIN)/python -c "$$HISTORY_END" $(QUALITY)/data/events.parquet)" --out $(QUALITY)/plan.parquet
	time $(BIN)/nudge evaluate-policy --plan $(QUALITY)/plan.parquet --truth $(QUALITY)/data/truth.parquet \
		--events $(QUALITY)/data/events.parquet --customers $(QUALITY)/data/customers.parquet \
		--report $(QUALITY)/models/report.json --seed 7

## After `make quality`: the propensity model refitted with more inputs, up to the hidden truth.
ceiling: $(STAMP)
	time $(BIN)/python -m training.ceiling --repo $(QUALITY)/repo --events $(QUALITY)/data/events.parquet \
		--customers $(QUALITY)/data/customers.parquet --truth $(QUALITY)/data/truth.parquet --json $(QUALITY)/ceiling.json

## Real data: the CDNOW purchase log (shipped by lifetimes) through the same pipeline, one
## training run per horizon (CDNOW customers buy rarely: 14 days as in the issue, 30 and 90 too).
QUALITY_REAL := quality-real
REAL_HORIZONS ?= 14 30 90
quality-real: $(STAMP)
	rm -rf $(QUALITY_REAL) && mkdir -p $(QUALITY_REAL)/repo/data
	cp feature_repo/definitions.py feature_repo/feature_store.yaml $(QUALITY_REAL)/repo/
	time $(BIN)/nudge import-cdnow --out $(QUALITY_REAL)/data
	time $(BIN)/nudge features --events $(QUALITY_REAL)/data/events.parquet --customers $(QUALITY_REAL)/data/customers.parquet --repo $(QUALITY_REAL)/repo
	$(BIN)/feast -c $(QUALITY_REAL)/repo apply
	for h in $(REAL_HORIZONS); do \
		time $(BIN)/nudge train --repo $(QUALITY_REAL)/repo --out $(QUALITY_REAL)/models-h$$h --horizon-days $$h \
			--events $(QUALITY_REAL)/data/events.parquet --customers $(QUALITY_REAL)/data/customers.parquet || exit 1; \
	done
