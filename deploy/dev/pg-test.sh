#!/usr/bin/env bash
# pg-test.sh: a throwaway PostgreSQL cluster for tests (`make test` uses it
# through deploy/dev/test.sh; it also works by hand).
#
#   pg-test.sh install        install Debian's postgresql if pg_ctl is missing
#   pg-test.sh start DIR      fresh cluster in DIR on a free 127.0.0.1 port;
#                             prints its URL (one line) on stdout
#   pg-test.sh url DIR        prints the URL again
#   pg-test.sh restart DIR    pg_ctl restart -m fast: same port, same data
#   pg-test.sh down DIR       stops the server, keeps DIR (an unreachable DB)
#   pg-test.sh up DIR         starts it again after `down`
#   pg-test.sh stop DIR       stops the server (fast, then immediate) and
#                             removes DIR; a missing DIR is not an error
#
# Only the URL goes to stdout; everything else goes to stderr. The server log
# is DIR/postgres.log.
#
# The cluster: listens on 127.0.0.1 only, unix socket in DIR, fsync and
# synchronous_commit on (commit costs are measured, so they must be real),
# max_connections 200. The tests connect as role `credfactory` with a random
# password over SCRAM, as production does (no trust auth on TCP: the tests then
# go through the same URL parsing and authentication as a real deployment).
# The role owns database credfactory_test and may CREATE DATABASE, so a test
# package can make a database of its own. The superuser `postgres` is reached
# only through the unix socket in DIR (trust; DIR is mode 0700).
#
# PostgreSQL refuses to run as root: when called as root the cluster belongs
# to the `postgres` system user the Debian package creates (or to
# `credfactory-pgtest`, created here when there is no `postgres` user), and
# DIR is made theirs. Called as any other user, the cluster is that user's.
#
# start on a DIR that a previous run left behind (server running or not) stops
# that server and starts afresh. To keep a typo from wiping a directory, start
# and stop only remove a DIR that is empty or carries this script's marker.
set -euo pipefail

SELF=$(readlink -f -- "$0")
MARKER=.credfactory-pg-test
DB_NAME=credfactory_test
DB_ROLE=credfactory

log() { printf 'pg-test: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
	sed -n '2,14p' "$SELF" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

if [ "$(id -u)" -eq 0 ]; then
	SUDO=()
else
	SUDO=(sudo)
fi

# The newest PostgreSQL under /usr/lib/postgresql, else pg_ctl on PATH.
find_bindir() {
	local d best=""
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/pg_ctl" ] || continue
		if [ -z "$best" ] || [ "$(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n1)" = "$d" ]; then
			best=$d
		fi
	done
	if [ -z "$best" ] && command -v pg_ctl >/dev/null 2>&1; then
		best=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
	fi
	printf '%s' "$best"
}

cmd_install() {
	if [ -n "$(find_bindir)" ]; then
		return 0
	fi
	log "installing PostgreSQL (Debian package postgresql)"
	if [ "${#SUDO[@]}" -gt 0 ] && ! command -v sudo >/dev/null 2>&1; then
		die "PostgreSQL is not installed and sudo is missing: install the Debian package postgresql as root"
	fi
	# The package would create and (where services may start) run a default
	# cluster on port 5432; the tests make their own, so ask it not to. This
	# only applies while installing: an existing setup is left as it is.
	if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
		"${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
		echo 'create_main_cluster = false' |
			"${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/50-credfactory-no-main-cluster.conf >/dev/null
	fi
	# apt-get update once per `make` run: the Makefile passes its marker file.
	local marker=${CREDFACTORY_APT_MARKER:-}
	if [ -z "$marker" ] || [ ! -f "$marker" ]; then
		"${SUDO[@]}" apt-get update -qq >&2
		if [ -n "$marker" ]; then touch "$marker"; fi
	fi
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		-o DPkg::Lock::Timeout=300 --no-install-recommends postgresql >&2
	[ -n "$(find_bindir)" ] || die "postgresql installed but no pg_ctl under /usr/lib/postgresql/*/bin"
}

# Sets BIN, OWNER, AS_OWNER for the cluster in $DIR.
setup_env() {
	BIN=$(find_bindir)
	[ -n "$BIN" ] || die "PostgreSQL is not installed (run: $SELF install)"
	if [ "$(id -u)" -eq 0 ]; then
		if id -u postgres >/dev/null 2>&1; then
			OWNER=postgres
		else
			OWNER=credfactory-pgtest
			if ! id -u "$OWNER" >/dev/null 2>&1; then
				log "creating system user $OWNER to run the test cluster"
				useradd --system --user-group --no-create-home --home-dir /nonexistent \
					--shell /usr/sbin/nologin "$OWNER"
			fi
		fi
		AS_OWNER=(runuser -u "$OWNER" --)
	else
		OWNER=$(id -un)
		AS_OWNER=()
	fi
}

# Is the server of $DIR running? (pg_ctl status: 0 running, 3 not running.)
running() {
	[ -f "$DIR/data/PG_VERSION" ] || return 1
	"${AS_OWNER[@]}" "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1
}

server_stop() {
	[ -f "$DIR/data/PG_VERSION" ] || return 0
	running || return 0
	log "stopping the server in $DIR"
	if ! "${AS_OWNER[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m fast -w -t 60 stop >/dev/null; then
		log "fast shutdown failed; immediate shutdown"
		"${AS_OWNER[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w -t 30 stop >/dev/null || true
	fi
	if running; then
		local pid
		pid=$(head -n1 "$DIR/data/postmaster.pid" 2>/dev/null || true)
		if [ -n "$pid" ]; then
			log "killing postmaster $pid"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 1
		fi
	fi
	! running || die "could not stop the server in $DIR"
}

# Removes $DIR if it is ours (marker) or empty.
remove_dir() {
	[ -e "$DIR" ] || return 0
	[ -d "$DIR" ] || die "$DIR exists and is not a directory"
	if [ ! -e "$DIR/$MARKER" ] && [ -n "$(ls -A "$DIR")" ]; then
		die "$DIR is not empty and was not made by $SELF; not removing it"
	fi
	rm -rf -- "$DIR"
}

# A TCP port that nothing on this machine has open (any address, any state).
# Below the ephemeral range (32768+), so outgoing connections do not take it;
# start retries with another port if the bind still fails.
free_port() {
	local used port
	used=$(awk 'NR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
	for _ in $(seq 1 200); do
		port=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
		if ! grep -qix "$(printf '%04X' "$port")" <<<"$used"; then
			printf '%d' "$port"
			return 0
		fi
	done
	die "no free TCP port found"
}

write_url() {
	printf 'postgres://%s:%s@127.0.0.1:%s/%s?sslmode=disable\n' \
		"$DB_ROLE" "$(cat "$DIR/password")" "$(cat "$DIR/port")" "$DB_NAME" >"$DIR/url"
}

pg_start() {
	"${AS_OWNER[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 start >/dev/null
}

cmd_start() {
	cmd_install
	setup_env
	if [ -d "$DIR" ] && [ -z "$(ls -A "$DIR")" ]; then
		chmod 0700 "$DIR" # an empty DIR, e.g. from mktemp -d: use it
	else
		if [ -e "$DIR" ]; then
			log "removing stale $DIR"
			server_stop
			remove_dir
		fi
		mkdir -p "$(dirname "$DIR")"
		mkdir -m 0700 "$DIR"
	fi
	touch "$DIR/$MARKER"
	if [ "$(id -u)" -eq 0 ]; then
		chown "$OWNER:" "$DIR" "$DIR/$MARKER"
		"${AS_OWNER[@]}" test -w "$DIR" ||
			die "user $OWNER cannot reach $DIR: pick a DIR whose parents it may enter (e.g. under /tmp)"
	fi
	# The unix socket path has a limit of 107 bytes.
	[ "${#DIR}" -le 90 ] || die "DIR path too long for a unix socket: $DIR"

	log "initdb in $DIR/data ($("$BIN/postgres" --version))"
	if ! "${AS_OWNER[@]}" "$BIN/initdb" -D "$DIR/data" -U postgres -E UTF8 --locale=C \
		--auth-local=trust --auth-host=scram-sha-256 --no-sync --no-instructions \
		>"$DIR/initdb.log" 2>&1; then
		cat "$DIR/initdb.log" >&2
		die "initdb failed"
	fi

	umask 077
	head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/password"
	local pw
	pw=$(cat "$DIR/password")

	local port attempt
	for attempt in 1 2 3 4 5; do
		port=$(free_port)
		printf '%s' "$port" >"$DIR/port"
		cat >"$DIR/data/postgresql.auto.conf" <<-EOF
			# written by deploy/dev/pg-test.sh
			listen_addresses = '127.0.0.1'
			port = $port
			unix_socket_directories = '$DIR'
			unix_socket_permissions = 0700
			max_connections = 200
			fsync = on
			synchronous_commit = on
			full_page_writes = on
			shared_buffers = '128MB'
			password_encryption = 'scram-sha-256'
			log_min_messages = warning
			log_connections = off
			log_lock_waits = on
		EOF
		if [ "$(id -u)" -eq 0 ]; then
			chown "$OWNER:" "$DIR"/* "$DIR/data/postgresql.auto.conf"
		fi
		if pg_start; then
			break
		fi
		if grep -qi 'could not bind\|address already in use\|could not create any TCP/IP sockets' "$DIR/postgres.log" 2>/dev/null &&
			[ "$attempt" -lt 5 ]; then
			log "port $port was taken; trying another"
			: >"$DIR/postgres.log"
			continue
		fi
		tail -n 30 "$DIR/postgres.log" >&2 || true
		die "the server did not start (log: $DIR/postgres.log)"
	done

	"${AS_OWNER[@]}" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$port" -U postgres -d postgres >&2 <<-EOF
		CREATE ROLE $DB_ROLE LOGIN CREATEDB PASSWORD '$pw';
		CREATE DATABASE $DB_NAME OWNER $DB_ROLE;
	EOF
	write_url
	if [ "$(id -u)" -eq 0 ]; then
		chown "$OWNER:" "$DIR/url"
	fi
	log "PostgreSQL on 127.0.0.1:$port, data and socket in $DIR"
	cat "$DIR/url"
}

need_cluster() {
	setup_env
	[ -f "$DIR/$MARKER" ] && [ -f "$DIR/data/PG_VERSION" ] || die "no test cluster in $DIR (run: $SELF start $DIR)"
}

cmd_restart() {
	need_cluster
	log "restarting the server in $DIR"
	"${AS_OWNER[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -m fast -w -t 60 restart >/dev/null ||
		{ tail -n 30 "$DIR/postgres.log" >&2; die "restart failed"; }
}

cmd_down() {
	need_cluster
	server_stop
}

cmd_up() {
	need_cluster
	if running; then return 0; fi
	log "starting the server in $DIR"
	pg_start || { tail -n 30 "$DIR/postgres.log" >&2; die "start failed"; }
}

cmd_stop() {
	[ -e "$DIR" ] || return 0
	if [ -f "$DIR/data/PG_VERSION" ]; then
		setup_env
		server_stop
	fi
	remove_dir
	log "removed $DIR"
}

[ $# -ge 1 ] || usage
sub=$1
shift
if [ "$sub" = install ]; then
	[ $# -eq 0 ] || usage
	cmd_install
	exit 0
fi
[ $# -eq 1 ] && [ -n "$1" ] || usage
DIR=$(readlink -m -- "$1")
[ "$DIR" != / ] || die "refusing DIR=/"
# Run from a directory every user may enter (the cluster owner cannot enter
# e.g. /root), so initdb and pg_ctl do not complain about the cwd.
cd /

case "$sub" in
start) cmd_start ;;
url) need_cluster; cat "$DIR/url" ;;
restart) cmd_restart ;;
down) cmd_down ;;
up) cmd_up ;;
stop) cmd_stop ;;
*) usage ;;
esac
