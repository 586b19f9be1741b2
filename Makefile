# enclaved — see README.md. `make dev` runs a local instance, `make test` runs
# every test (installing what is missing first).

GO        ?= go
# -trimpath: the dependencies compiled for the tests are then the ones
# scripts/build-enclaved.sh needs, so the reproducibility test reuses them.
TESTFLAGS ?= -v -count=1 -timeout 25m -trimpath
# The regtest Lightning tools (btcd, lnd) are built once into this cache.
export ENCLAVED_TOOLS ?= $(HOME)/.cache/enclaved/tools

.PHONY: dev test deps tools build vet fmt-check bench

dev: tools
	ENCLAVED_LIGHTNING_BIN=$$(./scripts/lightning-tools.sh --print-dir) $(GO) run ./cmd/enclaved dev $(ARGS)

build:
	$(GO) build -o bin/enclaved ./cmd/enclaved

deps:
	./scripts/install-deps.sh

tools: deps
	./scripts/lightning-tools.sh >/dev/null

test: tools
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	ENCLAVED_LIGHTNING_BIN=$$(./scripts/lightning-tools.sh --print-dir) $(GO) test $(TESTFLAGS) ./...

bench: tools
	ENCLAVED_LIGHTNING_BIN=$$(./scripts/lightning-tools.sh --print-dir) $(GO) test -run '^$$' -bench . -benchmem ./...
