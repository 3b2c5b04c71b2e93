#!/usr/bin/env bash
# test.sh: what `make test` runs after installing the test dependencies.
# go vet, then a throwaway PostgreSQL cluster (deploy/dev/pg-test.sh) for the
# duration of `go test`, stopped and removed on every exit: success, failure,
# Ctrl-C or TERM. The exit status is go vet's or go test's.
#
# The tests see:
#   CREDFACTORY_TEST_POSTGRES_URL  postgres://credfactory:PASS@127.0.0.1:PORT/credfactory_test?sslmode=disable
#   CREDFACTORY_TEST_POSTGRES_DIR  the cluster's directory (data, socket, log)
#   CREDFACTORY_TEST_POSTGRES_CTL  absolute path of pg-test.sh, so a fault test can
#                                  run "$CTL restart $DIR" (or down / up)
#
# Environment: GO (default go), GO_TEST_FLAGS (default
# "-race -count=1 -timeout 10m"), GO_TEST_PKGS (default ./...).
set -euo pipefail

cd "$(dirname "$0")/../.."
GO=${GO:-go}
GO_TEST_FLAGS=${GO_TEST_FLAGS:--race -count=1 -timeout 10m}
GO_TEST_PKGS=${GO_TEST_PKGS:-./...}
CTL=$(pwd)/deploy/dev/pg-test.sh

"$GO" vet ./...

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

# Under /tmp, whatever TMPDIR says: the cluster user must reach it, and the
# unix socket path must stay short.
pgdir=$(mktemp -d /tmp/credfactory-pg.XXXXXX)
# pg-test.sh start takes the empty DIR as it is.

cleanup() {
	local rc=$?
	# No second signal cuts the stop short: pg-test.sh stop has its own timeouts.
	trap '' INT TERM HUP
	trap - EXIT
	if ! bash "$CTL" stop "$pgdir"; then
		[ "$rc" -ne 0 ] || rc=1
	fi
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
export CREDFACTORY_TEST_POSTGRES_URL
export CREDFACTORY_TEST_POSTGRES_DIR=$pgdir
export CREDFACTORY_TEST_POSTGRES_CTL=$CTL

# shellcheck disable=SC2086 # flags and packages are word lists
"$GO" test $GO_TEST_FLAGS $GO_TEST_PKGS

# A short run of every fuzz target (request decoders: EST bodies, CSR
# attributes, JSON enrolment and forward batches, upload streams, stored
# derivation contexts). The seeds are in the fuzz functions; a longer run is
# FUZZ_TIME=10m make test. Go fuzzes one target per invocation.
# The default budget is a count of executions, not a duration: Go 1.26's
# fuzz coordinator can report a bare "context deadline exceeded" failure when
# a -fuzztime duration ends while a worker is mid-run on a loaded machine
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race. A
# real finding still fails the run and writes its input to testdata/fuzz/.
FUZZ_TIME=${FUZZ_TIME:-2000x}
if [ "$FUZZ_TIME" != "0" ] && [ "$GO_TEST_PKGS" = "./..." ]; then
	for pkg in $("$GO" list ./...); do
		dir=$("$GO" list -f '{{.Dir}}' "$pkg")
		for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
			echo "fuzz $pkg $target ($FUZZ_TIME)"
			"$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZ_TIME" "$pkg"
		done
	done
fi
