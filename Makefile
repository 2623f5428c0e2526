# Everyday entry points. `make up` and `make test` are the README's two commands.
SHELL := /bin/bash
.DEFAULT_GOAL := help
GIT_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

.PHONY: build
build: ## build the app and the deployer into bin/
	go build -o bin/app ./app
	@[ ! -d deployer ] || go build -o bin/deployer ./deployer

.PHONY: image
image: ## build the app image counter:$(GIT_COMMIT) from the Dockerfile
	scripts/dockerd-up
	scripts/image counter:$(GIT_COMMIT)

.PHONY: tools
tools: ## build (or find) the pinned nomad and consul binaries
	scripts/hashitools >/dev/null

.PHONY: up
up: tools ## start the local stack (Consul, Nomad, Docker, Redis, registry) on loopback
	STACK_DIR=$(CURDIR)/.stack scripts/dockerd-up
	go build -o bin/stack ./cmd/stack
	eval "$$(scripts/hashitools)" && bin/stack up -dir .stack -nomad "$$nomad" -consul "$$consul"

.PHONY: down
down: ## stop what make up started, and nothing else
	go build -o bin/stack ./cmd/stack
	bin/stack down -dir .stack

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

.PHONY: test
test: lint tools ## run every test, with the race detector, on real servers
	scripts/dockerd-up
	go test -race -count=1 -timeout 30m ./...
