# enclaved — see README.md. `make dev` runs a local instance, `make test` runs
# every test (installing what is missing first).

GO        ?= go
# -trimpath: the dependencies compiled for the tests are then the ones
# scripts/build-enclaved.sh needs, so the reproducibility test reuses them.
TESTFLAGS ?= -v -count=1 -timeout 25m -trimpath
# The regtest Lightning tools (btcd, lnd) are built once into this cache.
export ENCLAVED_TOOLS ?= $(HOME)/.cache/enclaved/tools

.PHONY: dev test deps tools build vet fmt-check bench bench-p8 microbench

# bin/enclaved is what the quick start's other terminals run; bin/demo-hello
# is the program of the demo image the instance serves from its registry.
dev: tools
	@$(GO) build -trimpath -o bin/enclaved ./cmd/enclaved
	@CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags='-s -w' -o bin/demo-hello ./internal/devregistry/hello
	@ENCLAVED_LIGHTNING_BIN=$$(./scripts/lightning-tools.sh --print-dir) ./bin/enclaved dev -demo bin/demo-hello $(ARGS)

build:
	$(GO) build -o bin/enclaved ./cmd/enclaved

deps:
	@./scripts/install-deps.sh

tools: deps
	@./scripts/lightning-tools.sh >/dev/null

test: tools
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	ENCLAVED_LIGHTNING_BIN=$$(./scripts/lightning-tools.sh --print-dir) $(GO) test $(TESTFLAGS) ./...

# The benchmark suite of issue 18 (internal/bench): a real instance under
# load, one table of measure, goal, floor, measured, ratio, pass. Timings
# never fail it. BENCH_OUT=FILE keeps the table; BENCH_PROFILE=DIR keeps the
# instance's CPU and heap profiles (go tool pprof DIR/cpu-p1.pprof).
bench: tools
	ENCLAVED_LIGHTNING_BIN=$$(./scripts/lightning-tools.sh --print-dir) ENCLAVED_BENCH=full \
		ENCLAVED_BENCH_OUT=$(BENCH_OUT) ENCLAVED_BENCH_PROFILE=$(BENCH_PROFILE) \
		$(GO) test -count=1 -timeout 75m -run '^TestBench$$' -v ./internal/bench

# P8 alone: how many 1-unit containers one instance runs at once (up to
# 1,000 or 25 min; every container and network it made is removed after).
bench-p8: tools
	ENCLAVED_LIGHTNING_BIN=$$(./scripts/lightning-tools.sh --print-dir) ENCLAVED_BENCH=full ENCLAVED_BENCH_P8=1 \
		ENCLAVED_BENCH_OUT=$(BENCH_OUT) $(GO) test -count=1 -timeout 45m -run '^TestBenchP8$$' -v ./internal/bench

# The go test microbenchmarks of every package.
microbench: tools
	ENCLAVED_LIGHTNING_BIN=$$(./scripts/lightning-tools.sh --print-dir) $(GO) test -run '^$$' -bench . -benchmem ./...
