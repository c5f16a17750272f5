# Ration: make run (one node, data in ./data), make test (what CI runs).
SHELL := /bin/bash
GO ?= go
BIN := bin
PKGS := ./...
# test/ is a Go module of its own (github.com/ration/ration/test, replacing
# the production module with ../), so that what only its real-process tests
# use (Kubernetes' API types, kustomize, porcupine) stays out of go.mod.
# Its packages are built and tested from inside it: `cd test && go test
# ./e2e/`. Those tests build cmd/node there (test/go.mod lists it as a tool
# so that tidy keeps what building it needs), and lint checks that this
# node is built from the same module versions as the one that ships.
# bench/ is another module (etcd, pgx, gonum plot), and tools/ holds buf
# (about 90 modules). Each module's go.mod and go.sum must be what `go mod
# tidy` makes of them.
TEST_PKGS := ./...
MODULES := . test bench tools
NODE_MODULES := list -deps -f '{{with .Module}}{{if not (or .Main .Replace)}}{{.Path}} {{.Version}}{{end}}{{end}}'
FUZZTIME ?= 10s

.PHONY: cluster all build run test test-race test-cluster test-full fuzz vet lint staticcheck-bin generate proto proto-baseline bench bench-quick bench-bin bench-vet bench-scale bench-ledger clean chaos chaos-bin chaos-selftest chaos-bugs-check

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
	cd test && $(GO) vet $(TEST_PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

# staticcheck at the version of go.mod's tool line, as a binary: `go tool`
# runs only the tools of the module it is run in, and test/ and bench/ have
# none.
staticcheck-bin:
	$(GO) build -o $(BIN)/staticcheck honnef.co/go/tools/cmd/staticcheck

# `go mod tidy -diff` prints the difference and fails when a go.mod or
# go.sum is not what tidy makes of it.
lint: vet proto staticcheck-bin chaos-bugs-check
	$(BIN)/staticcheck $(PKGS)
	cd test && ../$(BIN)/staticcheck $(TEST_PKGS)
	for m in $(MODULES); do (cd $$m && $(GO) mod tidy -diff) || exit 1; done
	diff <($(GO) $(NODE_MODULES) ./cmd/node | sort -u) \
		<(cd test && $(GO) $(NODE_MODULES) github.com/ration/ration/cmd/node | sort -u)

# Each planted bug of the chaos self-test is a patch against this tree
# (test/chaos/selftest/DESIGN.md): one that no longer applies fails here,
# in seconds, not in make chaos-selftest.
chaos-bugs-check:
	@for p in test/chaos/selftest/bugs/*.patch; do \
		git apply --check "$$p" || { echo "$$p no longer applies: update it (test/chaos/selftest/DESIGN.md)"; exit 1; }; \
	done

# Everything under the race detector; -short trims the long randomized
# suites, which test-full runs whole without it.
test-race:
	$(GO) test -race -short -count=1 $(PKGS)
	cd test && $(GO) test -race -short -count=1 $(TEST_PKGS)

# The long suite -short trims: the full ledger suite.
test-full:
	$(GO) test -count=1 ./ledger/

# Tests that run several protoactor remotes in one process skip under
# -race (each remote's start writes gRPC's global logger, a race with the
# gRPC already running there; cluster/actorcluster/DESIGN.md): run them
# without it. Real processes (test/e2e) run them under -race.
test-cluster:
	$(GO) test -short -count=1 ./cluster/actorcluster/ ./node/

fuzz:
	$(GO) test ./ledger/ -run XXX -fuzz FuzzLedger -fuzztime $(FUZZTIME)
	$(GO) test ./ledger/ -run XXX -fuzz FuzzDecode -fuzztime $(FUZZTIME)
	$(GO) test ./raftlog/ -run XXX -fuzz FuzzDecodeLog -fuzztime $(FUZZTIME)
	$(GO) test ./raftlog/ -run XXX -fuzz FuzzLogKey -fuzztime $(FUZZTIME)
	$(GO) test ./client/ -run XXX -fuzz FuzzRouting -fuzztime $(FUZZTIME)
	$(GO) test ./config/ -run XXX -fuzz FuzzParseSize -fuzztime $(FUZZTIME)
	$(GO) test ./httpapi/ -run XXX -fuzz FuzzFlatObject -fuzztime $(FUZZTIME)

test: lint build test-race test-cluster test-full fuzz

# The chaos harness (test/chaos, docs/chaos.md): a 3-node and a 5-node run
# of real nodes in network namespaces under a seeded fault schedule. Needs
# root. Reports land in out/chaos/; a failed check fails the target.
SEED ?= 1
CHAOS_DURATION ?= 90s
chaos-bin:
	$(GO) build -tags chaos -o $(BIN)/ration-node-chaos ./cmd/node
	cd test && $(GO) build -o ../$(BIN)/ration-chaos ./chaos/cmd/chaos

chaos: chaos-bin
	$(BIN)/ration-chaos -binary $(BIN)/ration-node-chaos -nodes 3 -seed $(SEED) -duration $(CHAOS_DURATION) -faults all -out out/chaos/3n-seed$(SEED)
	$(BIN)/ration-chaos -binary $(BIN)/ration-node-chaos -nodes 5 -seed $(SEED) -duration $(CHAOS_DURATION) -faults all -out out/chaos/5n-seed$(SEED)

# Each planted bug (test/chaos/selftest/DESIGN.md: a patch applied to a
# copy of the tree) must make the harness report FAIL.
chaos-selftest:
	cd test && RATION_CHAOS_SELFTEST=1 RATION_CHAOS_SELFTEST_OUT=$(CURDIR)/out/chaos/selftest $(GO) test -count=1 -v -parallel 2 -timeout 30m ./chaos/selftest/

# Protobuf (buf.yaml, buf.gen.yaml): buf compiles the .proto files itself,
# so no protoc is needed, and runs the Go plugins of go.mod's tool lines.
BUF := $(GO) tool -modfile=tools/go.mod buf
# buf.yaml's second module: raft log entries and node-to-node envelopes.
PROTO_INTERNAL := --path raftfsm/raftpb --path cluster/actorcluster/actorpb

generate:
	$(BUF) generate

# The committed .pb.go files are what `make generate` writes now, and no
# .proto change breaks what proto-baseline/ records: the API by buf's FILE
# rules, the internal formats by its WIRE rules (buf.yaml says why).
proto:
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && \
	$(BUF) generate -o "$$out" && \
	fresh=$$(cd "$$out" && find . -name '*.pb.go' | sed 's|^\./||' | LC_ALL=C sort) && \
	committed=$$(git ls-files '*.pb.go' | LC_ALL=C sort) && \
	if [ "$$fresh" != "$$committed" ]; then \
		echo "make generate writes" $$fresh "but" $$committed "are committed"; exit 1; \
	fi && \
	for f in $$fresh; do \
		diff -u "$$f" "$$out/$$f" || { echo "$$f is stale: run make generate"; exit 1; }; \
	done
	$(BUF) breaking api --against proto-baseline/api.yaml
	$(BUF) breaking $(PROTO_INTERNAL) --against proto-baseline/internal.yaml

# Records the .proto files as they are now as the baseline: when a release
# ships, or to accept a deliberate break (say why in the commit).
proto-baseline:
	$(BUF) build api --exclude-source-info -o proto-baseline/api.yaml
	$(BUF) build $(PROTO_INTERNAL) --exclude-source-info -o proto-baseline/internal.yaml

# The ledger's own Go benchmarks (docs/BENCHMARKS.md, "Ledger").
bench-ledger:
	$(GO) test ./ledger/ -run XXX -bench . -benchmem

# Ration, etcd and PostgreSQL side by side on this machine under the same
# load (bench/, its own Go module; docs/BENCHMARKS.md, "Side by side").
# Installs Debian's etcd-server and postgresql with apt-get when missing.
# bench (about 15-20 minutes) rewrites the generated section of
# docs/BENCHMARKS.md and the charts in docs/bench/; bench-quick (under 4
# minutes: the 64-client rows of Ration on 3 nodes and etcd with 3
# members) only prints. BENCH_FLAGS adds harness flags, e.g.
# BENCH_FLAGS='-duration 3s -warmup 1s'; BENCH_LAYOUTS=default runs the
# node's own raft log layout without passing --raft-log-store.
BENCH_LAYOUTS ?= shared,bolt
BENCH_QUICK_LAYOUTS ?= shared
BENCH_FLAGS ?=
bench-bin:
	cd bench && $(GO) build -o ../$(BIN)/ration-bench .

bench: build bench-bin
	$(BIN)/ration-bench -node-binary $(BIN)/ration-node -layouts $(BENCH_LAYOUTS) \
		-docs docs/BENCHMARKS.md -charts docs/bench -json out/bench/results.json $(BENCH_FLAGS)

bench-quick: build bench-bin
	$(BIN)/ration-bench -quick -node-binary $(BIN)/ration-node -layouts $(BENCH_QUICK_LAYOUTS) \
		-json out/bench/quick.json $(BENCH_FLAGS)

# One node holding many users (bench/scale, issue 12; docs/BENCHMARKS.md,
# "Scale"): 1,000,000 users x 20 ops and 200 users x 1,000 ops through
# Batch with --memory-limit 2GiB; RSS during and after, size on disk,
# restart after kill -9, cold reads. About 3 minutes; prints a table.
# SCALE_FLAGS adds flags, e.g. SCALE_FLAGS='-users 100000' or
# SCALE_FLAGS='-memory-limit ""' for none.
SCALE_FLAGS ?=
bench-scale: build
	cd bench && $(GO) build -o ../$(BIN)/ration-scale ./cmd/ration-scale
	$(BIN)/ration-scale -node-binary $(BIN)/ration-node $(SCALE_FLAGS)

# Tests, vet and staticcheck of the harness module. Not part of lint: its
# dependencies (etcd's client, pgx, gonum plot) cost CI minutes to build.
bench-vet: staticcheck-bin
	cd bench && $(GO) vet ./... && ../$(BIN)/staticcheck ./... && $(GO) test -race -short -count=1 ./...

clean:
	rm -rf $(BIN) out

# The container image, FROM scratch: static binaries built on the host (no
# registry is reachable to pull a builder image), staged in bin/image/ with
# an empty data/ that becomes the /data volume, owned by the runtime user.
IMAGE ?= ration:dev
IMAGE_DIR := $(BIN)/image

.PHONY: image docker-test

image:
	rm -rf $(IMAGE_DIR)
	mkdir -p $(IMAGE_DIR)/data
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(IMAGE_DIR)/ration-node ./cmd/node
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(IMAGE_DIR)/rationctl ./cmd/rationctl
	docker build -t $(IMAGE) -f Dockerfile .
	@docker image inspect $(IMAGE) --format 'image $(IMAGE): {{.Size}} bytes'

# A 3-node cluster of $(IMAGE) on a private Docker network, configured as
# the rendered dev StatefulSet, under load through a kill -9, a rolling
# restart and a pod recreated on a new IP (test/docker). Without
# RATION_DOCKER_TEST=1 the test skips, so plain `go test ./...` in test/
# needs no Docker.
docker-test: image
	cd test && RATION_DOCKER_TEST=1 RATION_IMAGE=$(IMAGE) $(GO) test -count=1 -v -timeout 20m ./docker/
