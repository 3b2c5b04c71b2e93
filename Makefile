# credfactory: the two commands a newcomer needs are `make run` and `make test`.
# Both install what is missing from Debian's packages (through sudo when not
# root), so they work on a fresh Debian machine that has Go.

GO       ?= go
DATA_DIR ?= ./var
LISTEN   ?= 127.0.0.1:8443
# CRL and OCSP over plain HTTP (signed answers; what relying parties fetch).
STATUS_LISTEN ?= 127.0.0.1:8080
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
BIN      := bin/credfactory
SUDO     := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

SOFTHSM_MODULE := /usr/lib/softhsm/libsofthsm2.so

# Packages by what needs them; the checks are files, so an installed machine
# pays no apt-get time.
# gcc and libc6-dev: miekg/pkcs11 is cgo, and -race needs cgo too; without a
# C compiler Go silently builds with cgo off and the HSM code does not compile.
RUN_DEPS  := /usr/bin/gcc /usr/include/stdio.h /etc/ssl/certs/ca-certificates.crt $(SOFTHSM_MODULE)
# chromium: the portal's browser test drives it headless (chromedp); under
# CI (env CI set) that test fails without it, elsewhere it is skipped.
TEST_DEPS := $(RUN_DEPS) /usr/bin/pkcs11-tool /usr/bin/openssl /usr/bin/chromium
# prometheus: promtool checks and unit-tests deploy/prometheus's rules, and an
# integration test runs the server scraping credfactory; under CI those tests
# fail without them, elsewhere they are skipped. The package installs a
# service it may start: the tests run their own server on a free port.
TEST_DEPS += /usr/bin/promtool /usr/bin/prometheus

# patroni, etcd-server, haproxy (and PostgreSQL 15): the high-availability
# tests (hatest/) run a Patroni cluster behind HAProxy. Installed under CI
# (env CI set), where those tests fail without them; elsewhere they skip, and
# deploy/dev/cluster.sh install puts them there. The packages' own services
# are kept from starting (cluster.sh says how).
ifneq ($(CI),)
TEST_DEPS += /usr/bin/patroni /usr/bin/etcd /usr/sbin/haproxy
endif

# PostgreSQL for the registry tests: any version under /usr/lib/postgresql.
PG_CTL := $(firstword $(wildcard /usr/lib/postgresql/*/bin/pg_ctl))
ifeq ($(PG_CTL),)
TEST_DEPS += postgresql
endif

GO_TEST_FLAGS ?= -race -count=1 -timeout 10m
GO_TEST_PKGS  ?= ./...

# golangci-lint, pinned (v2.15.0 builds with Go 1.26); config in .golangci.yml.
# Installed with go install from the module proxy when missing, under a
# versioned name in GOPATH/bin so that another version on the machine
# neither shadows it nor is replaced.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(shell $(GO) env GOPATH)/bin/golangci-lint-$(GOLANGCI_LINT_VERSION)

.PHONY: run test fuzz lint build bench bench-go deps-run deps-test vet clean postgresql

build:
	$(GO) build -buildvcs=false -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/credfactory

run: deps-run build
	@if [ ! -f "$(DATA_DIR)/trust-anchor.pem" ]; then $(BIN) init --data-dir "$(DATA_DIR)"; fi
	@echo
	@echo "credfactory is starting on https://localhost:$(lastword $(subst :, ,$(LISTEN)))"
	@echo "  trust anchor:  $(DATA_DIR)/trust-anchor.pem"
	@echo "  try:           curl --cacert $(DATA_DIR)/trust-anchor.pem https://localhost:$(lastword $(subst :, ,$(LISTEN)))/readyz"
	@echo "  metrics:       https://localhost:$(lastword $(subst :, ,$(LISTEN)))/metrics"
	@echo "  CRL and OCSP:  http://localhost:$(lastword $(subst :, ,$(STATUS_LISTEN)))/ca/v1/crl/issuing.crl, .../ocsp"
	@echo "  stop with Ctrl-C (in-flight requests finish first)"
	@echo
	CREDFACTORY_CA_STATUS_LISTEN="$${CREDFACTORY_CA_STATUS_LISTEN:-$(STATUS_LISTEN)}" \
	  $(BIN) serve --data-dir "$(DATA_DIR)" --listen "$(LISTEN)"

# Every test package makes its own SoftHSM token in a temp dir; none uses ./var.
# deploy/dev/test.sh runs go vet, then go test with a throwaway PostgreSQL
# cluster (deploy/dev/pg-test.sh) that it always stops and removes afterwards;
# the tests find it in CREDFACTORY_TEST_POSTGRES_URL, _DIR and _CTL.
# With the default GO_TEST_PKGS it also runs golangci-lint over the tree.
test: deps-test $(GOLANGCI_LINT)
	GO="$(GO)" GO_TEST_FLAGS="$(GO_TEST_FLAGS)" GO_TEST_PKGS="$(GO_TEST_PKGS)" GOLANGCI_LINT="$(GOLANGCI_LINT)" bash deploy/dev/test.sh

lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT):
	@echo "installing golangci-lint $(GOLANGCI_LINT_VERSION) (go install from the module proxy)"
	@tmp=$$(mktemp -d) && GOBIN="$$tmp" GOFLAGS= $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) \
	  && mkdir -p "$(dir $@)" && mv "$$tmp/golangci-lint" "$@" && rmdir "$$tmp"

# A short coverage-guided run of every fuzz target (FUZZ_TIME executions
# each, default 2000x). Their seed corpora already run in make test; this is
# separate because it needs a build of its own (deploy/dev/fuzz.sh says why).
# CI runs it after make test.
fuzz: deps-test
	GO="$(GO)" bash deploy/dev/fuzz.sh

# The standard bench set: ceilings, then every path at 1, 8 and 64 clients
# against a server it starts on the embedded defaults, then a factory line
# of 100,000 devices end to end (CSV upload, bulk bundles, EST with 64
# clients, registry verification); figures go to bench/README.md. The Go
# micro-benchmarks: make bench-go.
bench: deps-run build
	$(BIN) bench --ceilings --concurrency 1,8,64 --duration 3s --tokens 2000 --batches 1,100,1000 --json bench/last-run.json --plot bench/last-run.svg
	$(BIN) bench --factory 100000

bench-go: deps-test
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./hsm/ ./pki/ ./ca/

deps-run:
	@$(MAKE) --no-print-directory $(RUN_DEPS)

deps-test:
	@$(MAKE) --no-print-directory $(TEST_DEPS)

/usr/bin/gcc:
	$(call apt,gcc)
/usr/include/stdio.h:
	$(call apt,libc6-dev)
/etc/ssl/certs/ca-certificates.crt:
	$(call apt,ca-certificates)
$(SOFTHSM_MODULE):
	$(call apt,softhsm2)
/usr/bin/pkcs11-tool:
	$(call apt,opensc)
/usr/bin/openssl:
	$(call apt,openssl)
/usr/bin/chromium:
	$(call apt,chromium)
/usr/bin/promtool /usr/bin/prometheus:
	$(call apt,prometheus)
/usr/bin/patroni /usr/bin/etcd /usr/sbin/haproxy:
	@echo "installing patroni, etcd-server, haproxy (Debian packages)"
	@CREDFACTORY_APT_MARKER=/tmp/.credfactory-apt-updated-$$PPID $(SUDO) bash deploy/dev/cluster.sh install
postgresql:
	@echo "installing postgresql (Debian package)"
	@CREDFACTORY_APT_MARKER=/tmp/.credfactory-apt-updated-$$PPID bash deploy/dev/pg-test.sh install

# apt-get update once per make invocation, then install.
define apt
	@echo "installing $(1) (Debian package)"
	@[ -f /tmp/.credfactory-apt-updated-$$PPID ] || { $(SUDO) apt-get update -qq && touch /tmp/.credfactory-apt-updated-$$PPID; }
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1)
endef

clean:
	rm -rf bin
