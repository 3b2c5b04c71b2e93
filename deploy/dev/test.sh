#!/usr/bin/env bash
# test.sh: what `make test` runs after installing the test dependencies.
# go vet, then a throwaway PostgreSQL cluster
# (deploy/dev/pg-test.sh) for the duration of `go test` (golangci-lint runs
# beside it), stopped and removed
# on every exit: success, failure, Ctrl-C or TERM. The exit status is the
# first failing step's.
#
# The tests see:
#   CREDFACTORY_TEST_POSTGRES_URL  postgres://credfactory:PASS@127.0.0.1:PORT/credfactory_test?sslmode=disable
#   CREDFACTORY_TEST_POSTGRES_DIR  the cluster's directory (data, socket, log)
#   CREDFACTORY_TEST_POSTGRES_CTL  absolute path of pg-test.sh, so a fault test can
#                                  run "$CTL restart $DIR" (or down / up)
#
# Environment: GO (default go), GO_TEST_FLAGS (default
# "-race -count=1 -timeout 10m"), GO_TEST_PKGS (default ./...), GOLANGCI_LINT
# (the linter's path: make test sets it; unset, no lint).
#
# The fuzz targets' seed corpora run here as ordinary tests; coverage-guided
# fuzzing is `make fuzz` (deploy/dev/fuzz.sh). FUZZ_TIME is that script's
# and ignored here.
set -euo pipefail

cd "$(dirname "$0")/../.."
GO=${GO:-go}
GO_TEST_FLAGS=${GO_TEST_FLAGS:--race -count=1 -timeout 10m}
GO_TEST_PKGS=${GO_TEST_PKGS:-./...}
CTL=$(pwd)/deploy/dev/pg-test.sh

# vet with the tests' build flags (-race), so that it reuses their compiled
# dependencies instead of compiling every package a second time.
vet_flags=()
case " $GO_TEST_FLAGS " in *" -race "*) vet_flags+=(-race) ;; esac
"$GO" vet "${vet_flags[@]}" ./...

lint_pid=""
lint_log=""

# Clusters left by earlier runs that died without cleaning up (kill -9, a
# closed terminal, a go test timeout): stop those whose owner process, named
# in DIR/owner-pid (test.sh writes its own; a Go helper may write its), is gone.
# Another run's live cluster is left alone.
for d in /tmp/credfactory-pg.* /tmp/credfactory-pg-*; do
	[ -f "$d/owner-pid" ] || continue
	if [ ! -d "/proc/$(cat "$d/owner-pid")" ]; then
		bash "$CTL" stop "$d" || true
	fi
done

# The same for the high-availability tests' fleets (deploy/dev/cluster.sh,
# under /tmp/cf-ha.*), left by a go test that was killed or timed out.
stop_stale_fleets() {
	local d
	for d in /tmp/cf-ha.*; do
		[ -f "$d/owner-pid" ] || continue
		if [ ! -d "/proc/$(cat "$d/owner-pid")" ]; then
			bash deploy/dev/cluster.sh down "$d" || true
		fi
	done
}
stop_stale_fleets

# Under /tmp, whatever TMPDIR says: the cluster user must reach it, and the
# unix socket path must stay short.
pgdir=$(mktemp -d /tmp/credfactory-pg.XXXXXX)
# pg-test.sh start takes the empty DIR as it is.

cleanup() {
	local rc=$?
	# No second signal cuts the stop short: pg-test.sh stop has its own timeouts.
	trap '' INT TERM HUP
	trap - EXIT
	if [ -n "$lint_pid" ]; then
		kill "$lint_pid" 2>/dev/null || true
	fi
	[ -z "$lint_log" ] || rm -f "$lint_log"
	if ! bash "$CTL" stop "$pgdir"; then
		[ "$rc" -ne 0 ] || rc=1
	fi
	stop_stale_fleets
	exit "$rc"
}
trap cleanup EXIT
# On a signal, exit (128+n) so the EXIT trap stops the cluster. Bash runs
# these after the foreground command (go test, which gets Ctrl-C too) ends.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

CREDFACTORY_TEST_POSTGRES_URL=$(bash "$CTL" start "$pgdir")
echo $$ >"$pgdir/owner-pid"

# golangci-lint (.golangci.yml) over the whole tree, when make test passes
# its path (GOLANGCI_LINT) and the run covers every package. It runs beside
# go test, whose end-to-end tests leave a core idle while they wait on the
# servers they start; its verdict counts after the tests.
if [ -n "${GOLANGCI_LINT:-}" ] && [ "$GO_TEST_PKGS" = "./..." ]; then
	lint_log=$(mktemp)
	"$GOLANGCI_LINT" run ./... >"$lint_log" 2>&1 &
	lint_pid=$!
fi

export CREDFACTORY_TEST_POSTGRES_URL
export CREDFACTORY_TEST_POSTGRES_DIR=$pgdir
export CREDFACTORY_TEST_POSTGRES_CTL=$CTL

# The high-availability tests (hatest/: a Patroni/etcd PostgreSQL cluster,
# HAProxy and three replicas, deploy/dev/cluster.sh) kill processes and
# measure failover under load: they run on their own after the rest, so the
# other packages' tests do not share the CPU with the fleet. They skip
# without patroni, etcd-server and haproxy, and fail under CI without them
# (make test installs them under CI).
pkgs=$GO_TEST_PKGS
ha=""
if [ "$GO_TEST_PKGS" = "./..." ]; then
	pkgs=$("$GO" list ./... | grep -v '/hatest$')
	ha=./hatest
fi
# shellcheck disable=SC2086 # flags and packages are word lists
"$GO" test $GO_TEST_FLAGS $pkgs
if [ -n "$ha" ]; then
	# shellcheck disable=SC2086
	"$GO" test $GO_TEST_FLAGS "$ha"
fi

if [ -n "$lint_pid" ]; then
	lint_rc=0
	wait "$lint_pid" || lint_rc=$?
	lint_pid=""
	echo "golangci-lint:"
	cat "$lint_log"
	[ "$lint_rc" -eq 0 ] || exit "$lint_rc"
fi
