# The front door. `make test` works on a fresh machine: it obtains every component first (cached).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Node 24 from the component cache comes first on PATH for every recipe.
NODE_BIN := $(shell bash scripts/deps.sh --env | sed -n 's/^BACKBEAT_NODE_BIN=//p')
export PATH := $(NODE_BIN):$(PATH)
STAMP := node_modules/.installed
# The suites test-only runs, e.g. make test-only SPEC=e2e/components/kafka.test.ts; without SPEC, all of them.
SPEC ?=
ALL_SUITES := '{lib,workers,operator,cli,e2e,bench}/**/*.test.ts'
# All suites run in two streams at once (scripts/test-streams.ts), in about half the time of one; STREAMS=1
# runs them in one mocha process.
STREAMS ?= 2
# As root, the suites run inside a network namespace of their own with a Kubernetes node (scripts/isolated.sh),
# and the operator e2e runs on it; NODE=0, or no root, runs them on loopback with the stand-in kubelet.
NODE ?= $(shell [ "$$(id -u)" = 0 ] && command -v unshare >/dev/null && echo 1 || echo 0)
ISOLATED := $(if $(filter 1,$(NODE)),bash scripts/isolated.sh)

.PHONY: help deps test-deps install typecheck lint test test-only test-busy demo demo-operator bundle bench bench-status crds clean images node-images e2e-kind

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

deps: ## obtain Node 24, Kafka, MinIO, mc, SeaweedFS, Ceph RGW, etcd, kube-apiserver, kubectl, helm, rclone (once per machine)
	bash scripts/deps.sh

$(STAMP): package.json package-lock.json
	bash scripts/deps.sh node
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(STAMP) ## install the npm dependencies

typecheck: $(STAMP)
	npx tsc --noEmit -p .

lint: $(STAMP)
	npx eslint --max-warnings=0 .

# What make test needs, asked for at once so that downloads and the image's base overlap the Go compiles.
TEST_DEPS := default $(if $(filter 1,$(NODE)),kubenode engine base)

test: test-deps install typecheck lint $(if $(filter 1,$(NODE)),node-images) test-only ## everything CI runs: type check, lint, all tests on real components

test-deps:
	bash scripts/deps.sh $(TEST_DEPS)

test-only: $(STAMP) ## the test suites alone, or those in SPEC (components and node images must be there)
	$(ISOLATED) npx c8 $(if $(SPEC),mocha $(SPEC),$(if $(filter 2,$(STREAMS)),node scripts/test-streams.ts,mocha $(ALL_SUITES)))

test-busy: deps install ## the pipeline suites beside two processes that keep both cores busy (~25 min)
	BACKBEAT_TEST_BUSY=2 $(ISOLATED) npx mocha 'e2e/pipeline/*.test.ts'

demo: deps install ## start the real components and show what works today
	node scripts/demo.ts

demo-operator: deps install ## the operator on a real API server: helm install, kubectl apply examples/, objects replicated
	node scripts/demo-operator.ts

# Options for the benchmark, e.g. make bench BENCH='--rounds 5 --kafka'
BENCH ?=

bundle: $(STAMP) ## the CLI bundled as the image runs it, in dist/ (run it with BACKBEAT_BUNDLE=dist bin/backbeat ...)
	node scripts/bundle.ts

bench: deps install ## backbeat against rclone on the same objects and servers: medians and ratios (a few minutes)
	node bench/main.ts $(BENCH)

# Options for the status store benchmark, e.g. make bench-status BENCH_STATUS='--versions 10000000'
BENCH_STATUS ?=

bench-status: deps install ## the status store against the in-memory one it replaced, on Kafka: fold rate, peak RSS, restart time (1 M versions: ~11 min)
	node bench/status-main.ts $(BENCH_STATUS)

crds: $(STAMP) ## regenerate crds/ and the chart's CRDs from lib/config/schema.ts
	node scripts/gen-crds.ts

clean: ## remove test and bundle output (the component cache stays)
	rm -rf coverage dist

# The container image, tagged with package.json's version unless IMAGE says otherwise: make images IMAGE=reg/backbeat:dev
VERSION := $(shell sed -n 's/^  "version": "\(.*\)",$$/\1/p' package.json)
IMAGE ?= backbeat:$(VERSION)
# Built on a base assembled here (Debian minbase + Node, make deps base) unless NODE_IMAGE names one from a
# registry, e.g. make images NODE_IMAGE=node:24.21.0-bookworm-slim
NODE_IMAGE ?=

images: ## build the one image of the operator and the workers, backbeat:<version> (starts Docker if none runs)
	bash scripts/images.sh '$(IMAGE)' '$(VERSION)' '$(NODE_IMAGE)'

node-images: deps ## the image (make images) and a pause image, archived for the test node's containerd
	bash scripts/deps.sh kubenode engine base
	bash scripts/node-images.sh '$(IMAGE)' '$(VERSION)' '$(NODE_IMAGE)'

e2e-kind: ## the operator e2e suite on a kind cluster (needs Docker, kind, kubectl, helm)
	bash scripts/e2e-kind.sh
