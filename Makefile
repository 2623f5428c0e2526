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

.PHONY: setup
setup: ## install the Debian packages that are missing (silent when none is)
	@scripts/setup

.PHONY: image
image: setup ## build the app image counter:$(GIT_COMMIT) from the Dockerfile
	scripts/dockerd-up
	scripts/image counter:$(GIT_COMMIT)

.PHONY: tools
tools: ## build (or find) the pinned nomad, consul and prometheus binaries
	scripts/hashitools nomad consul prometheus >/dev/null

.PHONY: up
up: setup tools ## start the local stack, ACLs on (CLUSTER=1: 3 Consul + 3 Nomad servers, 2 client nodes; OPEN=1: ACLs off); release the app to dev unless dev already runs a release; call it
	STACK_DIR=$(CURDIR)/.stack scripts/dockerd-up
	go build -o bin/stack ./cmd/stack
	go build -o bin/deployer ./deployer
	eval "$$(scripts/hashitools nomad consul prometheus)" && bin/stack up -dir .stack -nomad "$$nomad" -consul "$$consul" -prometheus "$$prometheus" $(if $(CLUSTER),-cluster) $(if $(filter 1,$(OPEN)),-open)
	@set -eo pipefail; eval "$$(bin/stack env -dir .stack)"; \
	st=0; bin/deployer status -env dev >.stack/status.txt 2>&1 || st=$$?; \
	if [ $$st -ne 0 ] && [ $$st -ne 6 ]; then $(MAKE) --no-print-directory release ENV=dev; exit; fi; \
	echo "==> dev already runs a release, left as it is (make release ENV=dev releases the current commit):"; \
	$(wait_passing) dev .stack/status.txt; \
	cat .stack/status.txt; \
	$(call_app) .stack/status.txt

# wait_passing ENV FILE runs deployer status -env ENV into FILE until the
# address it names (app_url: the URL, through the front door, which answers
# only once an instance passes) answers /healthz, for up to 2 minutes,
# saying on stderr what it waits for: after make down, or after a part of
# the stack died, Nomad runs the allocations again and Consul's check of
# each (which PINGs Redis) has to pass before there is an instance to call.
# Right after a restart both can still report the instance from before it,
# passing, while its container is not back yet: so the instance must also
# answer. On time out it shows the last status and fails.
wait_passing = wait_passing() { \
	  local start=$$SECONDS said=$$((SECONDS - 5)) url; \
	  while :; do \
	    url=$$($(app_url) "$$2"); \
	    if [ -n "$$url" ] && curl -fsS -o /dev/null --max-time 2 "$${url%/}/healthz" 2>/dev/null; then return 0; fi; \
	    if [ $$((SECONDS - start)) -ge 120 ]; then \
	      cat "$$2" >&2; \
	      echo "make: no instance of $$1 passed its checks and answered within 120 s (deployer status -env $$1 above)" >&2; return 1; \
	    fi; \
	    if [ $$((SECONDS - said)) -ge 5 ]; then \
	      echo "==> waiting for an instance of $$1 to pass its checks and answer ($$((SECONDS - start)) s): $$(sed -n 's/^Allocations: *//p' "$$2")$${url:+, $$url not answering yet}" >&2; \
	      said=$$SECONDS; \
	    fi; \
	    sleep 1; \
	    bin/deployer status -env "$$1" >"$$2" 2>&1 || true; \
	  done; \
	}; wait_passing

# app_url FILE is the address to call from the deployer's output in FILE:
# the environment's URL (its front door, which stays the same across
# releases and restarts), or, for an environment without one, the first
# passing instance's.
app_url = app_url() { \
	  awk '/^URL: +http:\/\// && !u { u = $$2 } /^  http:\/\/[^ ]*$$/ && !i { i = $$1 } END { print (u != "" ? u : i) }' "$$1"; \
	}; app_url

# call_app FILE calls the environment's URL that the deployer's output in
# FILE names (app_url), then repeats its Nomad UI line, and names the
# stack's Prometheus (PROMETHEUS_ADDR, from bin/stack env).
call_app = call_app() { \
	  url=$$($(app_url) "$$1"); \
	  [ -n "$$url" ] || { echo "make: the deployer named neither the environment's URL nor a passing instance to call" >&2; return 1; }; \
	  echo "==> curl $$url"; curl -fsS "$$url"; echo; \
	  sed -n 's|^Nomad UI: |==> Nomad UI: |p' "$$1"; \
	  [ -z "$${PROMETHEUS_ADDR:-}" ] || echo "==> Prometheus: $$PROMETHEUS_ADDR/ (every allocation and the front door)"; \
	}; call_app

ENV ?= dev
.PHONY: release
release: ## build and push the current commit, submit it to ENV (default dev) on the local stack, and call it
	@set -eo pipefail; eval "$$(bin/stack env -dir .stack)"; \
	echo "==> deployer build"; \
	ref=$$(bin/deployer build -allow-dirty -network host $$(scripts/image --build-args | sed 's/^/-build-arg /') 2>.stack/build.log) \
	  || { tail -n 20 .stack/build.log; exit 1; }; \
	if grep -q '^analysis' environments/$(ENV).hcl; then \
	  url=$$(bin/deployer status -env $(ENV) 2>/dev/null | awk '/^URL: +http:\/\// { print $$2; exit }') || true; \
	  if [ -n "$$url" ]; then \
	    echo "==> load: GET $$url 100/s while the canary is judged (scripts/load; the local stack has no users)"; \
	    scripts/load "$$url" 2>>.stack/release-load.txt & load=$$!; trap 'kill $$load 2>/dev/null' EXIT; \
	  fi; \
	fi; \
	echo "==> deployer submit -env $(ENV) -image $$ref"; \
	bin/deployer submit -env $(ENV) -image "$$ref" | tee .stack/last-release.txt; \
	$(call_app) .stack/last-release.txt

.PHONY: demo
demo: up ## one build through dev, test and prod, a second one, then prod rolled back; each app's answer
	scripts/demo

.PHONY: down
down: ## stop what make up started, and nothing else; keep its state (jobs and their history, config snapshots, the counter) for the next make up
	go build -o bin/stack ./cmd/stack
	bin/stack down -dir .stack

.PHONY: clean
clean: ## stop the stack and delete its state in .stack (the only way to lose it)
	@$(MAKE) --no-print-directory down
	@if [ -d .stack ]; then \
	  echo "deleting .stack: Consul's data (every release's config snapshot), Nomad's data (every job's history)," \
	    "Redis's data (the counter), the registry's images, the logs"; \
	  rm -rf .stack; \
	fi

BACKUP ?= backups/$(shell date -u +%Y%m%dT%H%M%SZ)
.PHONY: backup
backup: ## save the stack's releases, both halves (Nomad's and Consul's snapshots), and its tokens into a new folder BACKUP (default backups/UTC-TIME)
	go build -o bin/stack ./cmd/stack
	@mkdir -p $(dir $(BACKUP))
	bin/stack backup -dir .stack -out $(BACKUP)

.PHONY: restore
restore: ## restore the backup in FROM onto the running stack, take its tokens, and start the agents again with them
	@[ -n "$(FROM)" ] || { echo "make restore: FROM=DIR names the backup (make backup made it)" >&2; exit 2; }
	go build -o bin/stack ./cmd/stack
	bin/stack restore -dir .stack -from $(FROM)
	@$(MAKE) --no-print-directory down
	@$(MAKE) --no-print-directory up

.PHONY: bench
bench: setup tools ## benchmarks: the app vs redis-benchmark and through its front door, the deployer vs the nomad CLI (not part of make test)
	scripts/dockerd-up
	go run ./cmd/bench

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

.PHONY: check
check: lint ## the fast tier: gofmt, go vet and go test -short, which starts no server (docs/testing.md)
	go test -short ./...

.PHONY: test
test: setup lint tools ## run every test, with the race detector, on real servers
	scripts/dockerd-up
	@# One package at a time: the integration packages each run stacks and
	@# clusters of their own, and on two cores they would time each other out.
	go test -race -count=1 -p 1 -timeout 30m ./...
