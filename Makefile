# Ration: make run (one node, data in ./data), make test (what CI runs).
SHELL := /bin/bash
GO ?= go
BIN := bin
PKGS := ./...
FUZZTIME ?= 10s

.PHONY: all build run test test-race test-full fuzz vet lint generate bench clean cluster

all: build

build:
	$(GO) build -o $(BIN)/ration-node ./cmd/node
	$(GO) build -o $(BIN)/rationctl ./cmd/rationctl

# One node, every shard local, HTTP on :8080 and gRPC on :9090.
run: build
	$(BIN)/ration-node --node-id node1 --data-dir ./data

vet:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

lint: vet
	$(GO) tool staticcheck $(PKGS)

# Everything under the race detector; -short trims the long randomized
# suites, which test-full runs whole without it.
test-race:
	$(GO) test -race -short -count=1 $(PKGS)

test-full:
	$(GO) test -count=1 ./ledger/

fuzz:
	$(GO) test ./ledger/ -run XXX -fuzz FuzzLedger -fuzztime $(FUZZTIME)
	$(GO) test ./ledger/ -run XXX -fuzz FuzzDecode -fuzztime $(FUZZTIME)

test: lint build test-race test-full fuzz

generate:
	$(GO) generate ./api/... ./raftfsm/...

bench:
	$(GO) test ./ledger/ -run XXX -bench . -benchmem

clean:
	rm -rf $(BIN)
