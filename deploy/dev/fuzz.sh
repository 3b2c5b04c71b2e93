#!/usr/bin/env bash
# fuzz.sh: what `make fuzz` runs: a short run of every fuzz target (request
# decoders: EST bodies, CSR attributes and names, JSON enrolment and forward
# batches, upload streams, OCSP requests, stored derivation contexts, IDs).
#
# Their seed corpora (the f.Add inputs and testdata/fuzz/) already run as
# ordinary tests in every `make test`; this adds coverage-guided inputs. It is
# a step of its own because a fuzz build is instrumented: every package,
# dependencies included (SQLite's C among them), compiles once more, which
# `make test` need not wait for. CI runs it after
# `make test`. All targets share that one instrumented build through the Go
# build cache; each target then costs a link and its executions.
#
# FUZZ_TIME (default 2000x) is per target. It is a count of executions, not
# a duration: Go 1.26's fuzz coordinator can report a bare "context deadline
# exceeded" failure when a -fuzztime duration ends while a worker is mid-run
# on a loaded machine (golang/go#75804, fixed in Go 1.27); a count has no
# deadline to race. A longer run: FUZZ_TIME=200000x make fuzz. A real finding
# fails the run and writes its input to the package's testdata/fuzz/, where
# `make test` replays it from then on. FUZZ_PKGS (default ./...) narrows it.
set -euo pipefail

cd "$(dirname "$0")/../.."
GO=${GO:-go}
FUZZ_TIME=${FUZZ_TIME:-2000x}
FUZZ_PKGS=${FUZZ_PKGS:-./...}

n=0
while read -r pkg dir; do
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "fuzz $pkg $target ($FUZZ_TIME)"
		"$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZ_TIME" "$pkg"
		n=$((n + 1))
	done
done < <("$GO" list -f '{{.ImportPath}} {{.Dir}}' $FUZZ_PKGS)
if [ "$n" -eq 0 ]; then
	echo "fuzz.sh: no fuzz target under $FUZZ_PKGS" >&2
	exit 1
fi
echo "fuzz: $n targets, $FUZZ_TIME each"
