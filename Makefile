# Two commands work on a fresh machine (Python 3.11+, Node.js for the Azure test server):
#   make demo   generate sample media into a local integration and process them (no server needed)
#   make test   install what the tests need and run them (they start their own S3 and Azure servers)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The report page's scripts (hls.js, OpenSeadragon): npm ci of package-lock.json, then copied
# into worker/report/static/ where the report inlines them.
REPORT_ASSETS := worker/report/static/.package-lock.json
$(REPORT_ASSETS): package.json package-lock.json
	scripts/bundle-report-assets

install: $(STAMP) $(REPORT_ASSETS)

demo: install
	rm -rf demo-bucket && mkdir -p .cache
	$(BIN)/python -m fixtures demo-bucket --demo > .cache/demo-keys.txt
	$(BIN)/mediaworker process demo $$(cat .cache/demo-keys.txt) --report demo-bucket/report.html
	@echo "renditions and metadata.json files are under demo-bucket/data/"
	@echo "the same items again, through the queue on the embedded broker (no server):"
	rm -rf .cache/broker
	MEDIAWORKER_BROKER__STATE_DIR=.cache/broker $(BIN)/mediaworker worker --concurrency 2 \
		> .cache/demo-worker.log 2>&1 & echo $$! > .cache/demo-worker.pid; \
	MEDIAWORKER_BROKER__STATE_DIR=.cache/broker $(BIN)/mediaworker enqueue demo \
		$$(cat .cache/demo-keys.txt) --wait --timeout 600; rc=$$?; \
	kill -TERM $$(cat .cache/demo-worker.pid); wait; exit $$rc

test: install
	scripts/ensure-azurite
	scripts/ensure-browser
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/bench_images.py
	$(BIN)/python bench/bench_slides.py
	$(BIN)/python bench/bench_video.py
	$(BIN)/python bench/bench_queue.py
	$(BIN)/python bench/bench_hardening.py --results bench/RESULTS-hardening.md

clean:
	rm -rf demo-bucket .cache bench/.work
