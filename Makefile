# dbpilot: see README.md. Every target installs what it needs (deploy/dev/install-deps.sh).
GO        ?= go
BIN       := bin
PKGS      := ./...
LDFLAGS   := -X github.com/dbpilot/dbpilot/internal/buildinfo.Version=$(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
TEST_TIMEOUT ?= 25m

.PHONY: all deps build demo test test-unit lint bench-failover bench-agent bench-backup clean

all: build

deps:
	@./deploy/dev/install-deps.sh

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## demo: a real 3-node PostgreSQL cluster under three agents on an embedded etcd (Ctrl-C stops it)
demo: deps build
	./$(BIN)/dbpilot-agent demo --dir .dbpilot/demo --nodes 3

## test: the README's test command (CI: .ci/run) — lint, then every test with the race detector
test: deps lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## bench-failover: RTO, switchover write gap, lost acknowledged writes, split brain (docs/benchmarks.md)
bench-failover: deps build
	./$(BIN)/dbpilot-bench failover --runs 5

## bench-agent: RSS and CPU of one idle agent over 60 s
bench-agent: deps build
	./$(BIN)/dbpilot-bench agent --seconds 60

## bench-backup: pgbench scale 70 (~1 GiB): dbpilot full backup vs plain pg_basebackup, restore and PITR (docs/benchmarks.md)
bench-backup: deps build
	./$(BIN)/dbpilot-bench backup --scale 70

clean:
	rm -rf $(BIN) .dbpilot
