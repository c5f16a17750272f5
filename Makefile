# Ration: make run (one node, data in ./data), make test (what CI runs).
SHELL := /bin/bash
GO ?= go
BIN := bin
PKGS := ./...
FUZZTIME ?= 10s

.PHONY: cluster all build run test test-race test-full fuzz vet lint generate bench clean cluster

all: build

build:
	$(GO) build -o $(BIN)/ration-node ./cmd/node
	$(GO) build -o $(BIN)/rationctl ./cmd/rationctl

# One node, every shard local, HTTP on :8080 and gRPC on :9090.
run: build
	$(BIN)/ration-node --node-id node1 --data-dir ./data

# Three nodes on 127.0.0.1, .2 and .3 with the default ports, data in
# ./data/nodeN, logs in ./data/nodeN/node.log. Ctrl-C stops all three.
cluster: build
	@trap 'kill $$(jobs -p) 2>/dev/null; wait' INT TERM EXIT; \
	for i in 1 2 3; do \
		mkdir -p data/node$$i; \
		$(BIN)/ration-node --node-id node$$i --data-dir ./data/node$$i --bind-host 127.0.0.$$i \
			--join 127.0.0.1,127.0.0.2,127.0.0.3 --bootstrap-expect 3 >data/node$$i/node.log 2>&1 & \
	done; \
	echo "3 nodes: HTTP on 127.0.0.{1,2,3}:8080, gRPC on :9090; logs in data/nodeN/node.log; Ctrl-C stops them"; \
	wait

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
