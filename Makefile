# dbpilot: see README.md. Every target installs what it needs (deploy/dev/install-deps.sh).
GO        ?= go
BIN       := bin
PKGS      := ./...
LDFLAGS   := -X github.com/dbpilot/dbpilot/internal/buildinfo.Version=$(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
TEST_TIMEOUT ?= 25m

.PHONY: all deps test-deps build demo demo-agents test test-dapr lint bench-failover bench-agent bench-backup bench-controlplane bench-alerts chaos clean walkthrough

all: build

deps:
	@./deploy/dev/install-deps.sh

test-deps:
	@./deploy/dev/install-deps.sh --test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

## demo: dbpilot-server dev (embedded etcd, SQLite, process provider) + a 3-node PostgreSQL cluster created with the CLI (Ctrl-C cleans up)
demo: deps build
	./deploy/dev/demo.sh

## demo-agents: three agents on an embedded etcd, no control plane; prints the cluster table on every change
demo-agents: deps build
	./$(BIN)/dbpilot-demo --dir .dbpilot/demo-agents --nodes 3

## test: the README's test command (CI: .ci/run) — lint, then every test with the race detector
test: test-deps lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

## walkthrough: the five-minute CLI walkthrough of docs/cli.md, end to end (TestWalkthrough runs it too)
walkthrough: deps build
	./deploy/dev/walkthrough.sh

DAPRD ?= $(HOME)/.cache/dbpilot/daprd-1.14.4

## test-dapr: the control plane over real daprd sidecars and Redis (killed and restarted mid-stream)
test-dapr: deps
	@DAPRD=$(DAPRD) ./deploy/dev/install-dapr-deps.sh
	DBPILOT_DAPRD=$(DAPRD) $(GO) test -race -count=1 -timeout 10m -tags dapr ./controlplane/daprtest/ ./agent/report/

# staticcheck (honnef.co/go/tools) at a pinned version, built once with
# `go install` into a cache outside the repository (like MinIO in
# deploy/dev/install-deps.sh); default checks, no staticcheck.conf.
STATICCHECK_VERSION := v0.8.2
STATICCHECK ?= $(HOME)/.cache/dbpilot/staticcheck-$(STATICCHECK_VERSION)

$(STATICCHECK):
	@echo "lint: building staticcheck $(STATICCHECK_VERSION) into $@ (once)" >&2
	@mkdir -p $(dir $@)
	@tmp=$$(mktemp -d) && (cd $$tmp && GOBIN=$$tmp GOFLAGS=-buildvcs=false $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)) && \
	  mv $$tmp/staticcheck $@ && rm -rf $$tmp

## lint: gofmt, go vet and staticcheck (make test runs it first)
lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

## bench-failover: RTO, switchover write gap, lost acknowledged writes, split brain (docs/benchmarks.md)
bench-failover: deps build
	./$(BIN)/dbpilot-bench failover --runs 5

## chaos: randomised fault campaign, 50 faults per mode in sync and async (docs/benchmarks.md); not part of test/CI.
## CHAOS_ARGS adds flags, e.g. make chaos CHAOS_ARGS="--seed 42" to replay a seed.
chaos: deps build
	./$(BIN)/dbpilot-bench chaos --faults 50 --modes sync,async $(CHAOS_ARGS)

## bench-agent: RSS and CPU of one idle agent over 60 s
bench-agent: deps build
	./$(BIN)/dbpilot-bench agent --seconds 60

## bench-alerts: alert detection/notification latency over randomised faults, false pages during planned switchovers, /metrics scrape p99 (docs/observability.md)
bench-alerts: deps build
	./$(BIN)/dbpilot-bench alerts --faults 12 --switchovers 10

## bench-controlplane: events ingested/s, API p99 and server RSS for 1,000 simulated clusters × 3 nodes (docs/benchmarks.md)
bench-controlplane: build
	./$(BIN)/dbpilot-bench controlplane --clusters 1000 --nodes 3 --rounds 3

## bench-backup: pgbench scale 70 (~1 GiB): dbpilot full backup vs plain pg_basebackup, restore and PITR (docs/benchmarks.md)
bench-backup: deps build
	./$(BIN)/dbpilot-bench backup --scale 70

clean:
	rm -rf $(BIN) .dbpilot
