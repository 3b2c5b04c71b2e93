#!/usr/bin/env bash
# cluster.sh: credfactory as a fleet on loopback, for the high-availability
# tests (hatest/) and for a person who wants to see it. Everything lives in
# DIR and listens on 127.0.0.1 only:
#
#   etcd (one member)                the DCS Patroni elects its leader in
#   3 Patroni members, PostgreSQL 15 synchronous_mode (strict): a commit is
#                                    acknowledged once a standby has it too
#   HAProxy                          PG port -> the member whose Patroni REST
#                                    /primary answers 200; HTTPS port (TCP
#                                    passthrough, so client certificates reach
#                                    the replicas) -> credfactory replicas
#                                    whose /readyz answers 200
#   N credfactory replicas           one `init` ceremony; its SoftHSM token
#                                    copied to every replica (the dev stand-in
#                                    for one network HSM cluster)
#
#   cluster.sh install               install patroni, etcd-server, haproxy (and
#                                    postgresql-15, curl) when missing, their
#                                    services not started
#   cluster.sh up DIR                start it all (REPLICAS=N, default 3;
#                                    CREDFACTORY_BIN=path, default: go build)
#   cluster.sh status DIR            members, roles, replicas' readiness
#   cluster.sh down DIR              stop everything and remove DIR
#   cluster.sh start-member DIR m2   start a Patroni member again (after a kill)
#   cluster.sh start-replica DIR 2   start credfactory replica 2 again
#   cluster.sh account DIR NAME      a new manufacturer account; prints its API
#                                    key (a bench --server run per account:
#                                    its verification lists that tenant's devices)
#   cluster.sh scale DIR N           HAProxy sends HTTPS to replicas 1..N only
#                                    (the others in maintenance)
#
# HSM_LATENCY=30ms (with up) starts the replicas with the test-only delay
# per HSM signature (hsm.test_sign_latency), standing in for a network HSM
# when replica scaling is measured on one machine.
#
# `up` writes DIR/cluster.env (ports, URLs, the registry's URL and the
# PostgreSQL passwords; shell syntax, mode 0600) and prints its path; the
# bench accounts' API keys are DIR/maker.key (bench-maker, manufacturer) and
# DIR/admin.key (bench-admin, sp-admin). DIR must be empty or absent; down only
# removes a DIR carrying this script's marker. Must run as root (packages,
# and PostgreSQL runs as the postgres user).
set -euo pipefail

SELF=$(readlink -f -- "$0")
ROOT=$(cd "$(dirname "$SELF")/../.." && pwd)
MARKER=.credfactory-ha-cluster
SCOPE=credfactory-ha
MEMBERS=(m1 m2 m3)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
# The SP's domain: init constrains the issuing CA to it and every replica
# serves under it (portal.sp_domain).
export CREDFACTORY_PORTAL_SP_DOMAIN=ha.sp.example

log() { printf 'cluster: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

usage() {
	sed -n '2,42p' "$SELF" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and runs PostgreSQL as the postgres user)"

have_all() {
	[ -x /usr/bin/patroni ] && [ -x /usr/bin/etcd ] && [ -x /usr/sbin/haproxy ] && [ -x "$PGBIN/postgres" ] && [ -x /usr/bin/curl ]
}

cmd_install() {
	have_all && return 0
	log "installing patroni, etcd-server, haproxy, postgresql-15, curl (Debian packages)"
	# The packages ship services that would take etcd's, HAProxy's and
	# PostgreSQL's default ports: keep them from starting while installing
	# (policy-rc.d, the Debian mechanism; an existing one is left alone).
	local policy=/usr/sbin/policy-rc.d made_policy=""
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		made_policy=1
	fi
	if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
		mkdir -p /etc/postgresql-common/createcluster.d
		echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.d/50-credfactory-no-main-cluster.conf
	fi
	local marker=${CREDFACTORY_APT_MARKER:-}
	if [ -z "$marker" ] || [ ! -f "$marker" ]; then
		apt-get update -qq >&2
		if [ -n "$marker" ]; then touch "$marker"; fi
	fi
	local rc=0
	env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
		--no-install-recommends patroni etcd-server haproxy postgresql-15 curl >&2 || rc=$?
	[ -z "$made_policy" ] || rm -f "$policy"
	[ "$rc" -eq 0 ] || die "apt-get install failed ($rc)"
	# Where systemd runs, the units were enabled: disable them, the fleet
	# here runs its own processes on free ports.
	if [ -d /run/systemd/system ]; then
		systemctl disable --now etcd haproxy patroni >/dev/null 2>&1 || true
	fi
	have_all || die "installed, but patroni, etcd, haproxy, curl or $PGBIN/postgres is still missing"
}

# A TCP port nothing has open, below the ephemeral range (as pg-test.sh).
USED_PORTS=""
free_port() {
	local used port
	used=$(awk 'NR > 1 { split($2, a, ":"); print a[2] }' /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
	for _ in $(seq 1 500); do
		port=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
		if ! grep -qix "$(printf '%04X' "$port")" <<<"$used" && ! grep -qw "$port" <<<"$USED_PORTS"; then
			USED_PORTS="$USED_PORTS $port"
			printf '%d' "$port"
			return 0
		fi
	done
	die "no free TCP port found"
}

wait_for() { # seconds description command...
	local t=$1 what=$2
	shift 2
	local deadline=$((SECONDS + t))
	until "$@" >/dev/null 2>&1; do
		[ "$SECONDS" -lt "$deadline" ] || die "timed out after ${t}s waiting for $what"
		sleep 0.2
	done
}

http_ok() { curl -fsS -m 2 -o /dev/null "$1"; }

# bg NAME USER command...: start a daemon whose pid goes to DIR/run/NAME.pid
# and whose output goes to DIR/log/NAME.log.
bg() {
	local name=$1 user=$2
	shift 2
	if [ "$user" = root ]; then
		setsid "$@" >>"$DIR/log/$name.log" 2>&1 </dev/null &
	else
		setsid runuser -u "$user" -- "$@" >>"$DIR/log/$name.log" 2>&1 </dev/null &
	fi
	echo $! >"$DIR/run/$name.pid"
}

stop_pid() { # name signal
	local f="$DIR/run/$1.pid" pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	# The whole session (setsid): runuser's child, patroni's postgres.
	kill "-$2" -- "-$pid" 2>/dev/null || kill "-$2" "$pid" 2>/dev/null || true
}

load_env() {
	[ -f "$DIR/$MARKER" ] && [ -f "$DIR/cluster.env" ] || die "no cluster in $DIR (run: $SELF up $DIR)"
	# shellcheck disable=SC1091
	. "$DIR/cluster.env"
}

# alive NAME: the daemon of DIR/run/NAME.pid runs.
alive() {
	[ -f "$DIR/run/$1.pid" ] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null
}

start_member() { # m
	local m=$1
	if alive "patroni-$m"; then
		log "member $m runs already"
		return 0
	fi
	bg "patroni-$m" postgres /usr/bin/patroni "$DIR/$m.yml"
}

start_replica() { # i
	local i=$1 r="$DIR/r$1"
	if alive "replica$i"; then
		log "replica $i runs already"
		return 0
	fi
	local port_var="HA_REPLICA${i}_PORT" ops_var="HA_REPLICA${i}_OPS"
	(
		export CREDFACTORY_STORE_URL="$HA_STORE_URL"
		export CREDFACTORY_SERVER_OPS_LISTEN="127.0.0.1:${!ops_var}"
		export CREDFACTORY_LOG_LEVEL=warn CREDFACTORY_LOG_AUDIT_FILE="$r/audit.log"
		# Load is what the fleet is measured with: rate limits are per
		# replica (README "Rate limits") and would throttle one loopback
		# source by design.
		for l in ENROL_SOURCE ENROL_TENANT ENROL_OBF TOKEN_TENANT LOGIN_SOURCE LOGIN_ACCOUNT; do
			export "CREDFACTORY_LIMITS_${l}_RATE=0"
		done
		if [ -n "${HA_HSM_LATENCY:-}" ]; then
			# hsm.test_sign_latency: a network HSM's round trip per
			# signature, so replicas scale as they would on their own
			# machines (deploy/SIZING.md); both switches are needed.
			export CREDFACTORY_HSM_TEST_SIGN_LATENCY="$HA_HSM_LATENCY" CREDFACTORY_TEST_HSM_LATENCY="$HA_HSM_LATENCY"
		fi
		bg "replica$i" root "$HA_BIN" serve --data-dir "$r" --listen "127.0.0.1:${!port_var}"
	)
}

write_member_conf() { # m restport pgport
	local m=$1 rest=$2 pg=$3
	mkdir -p "$DIR/pg/$m-sock"
	cat >"$DIR/$m.yml" <<-EOF
		scope: $SCOPE
		name: $m
		log:
		  level: WARNING
		restapi:
		  listen: 127.0.0.1:$rest
		  connect_address: 127.0.0.1:$rest
		# etcd's v2 API: Patroni 3.0.2 (Debian 12) renews its leader key
		# through the v3 API with a plain put once its lease expired, which
		# can overwrite a newer leader's key (fixed in Patroni 3.0.3);
		# TestSplitBrainOneWriter lost an acknowledged write that way. The
		# v2 API's renewal is a compare-and-swap on the holder's name.
		etcd:
		  host: 127.0.0.1:$HA_ETCD_PORT
		bootstrap:
		  dcs:
		    # Failover within ttl + loop_wait of a leader's death; Patroni
		    # needs loop_wait + 2 x retry_timeout <= ttl.
		    ttl: 10
		    loop_wait: 1
		    retry_timeout: 4
		    maximum_lag_on_failover: 1048576
		    # A commit returns once a synchronous standby has it, and with
		    # strict mode the primary stops acknowledging writes when no
		    # standby is left rather than keep them on one node.
		    synchronous_mode: true
		    synchronous_mode_strict: true
		    synchronous_node_count: 1
		    postgresql:
		      use_pg_rewind: true
		      use_slots: true
		      parameters:
		        max_connections: 120
		        shared_buffers: 16MB
		        wal_level: replica
		        hot_standby: "on"
		        max_wal_senders: 10
		        max_replication_slots: 10
		        wal_keep_size: 64MB
		        wal_log_hints: "on"
		        fsync: "on"
		        synchronous_commit: "on"
		  initdb:
		    - encoding: UTF8
		    - locale: C
		postgresql:
		  listen: 127.0.0.1:$pg
		  connect_address: 127.0.0.1:$pg
		  data_dir: $DIR/pg/$m
		  bin_dir: $PGBIN
		  pgpass: $DIR/pg/$m.pgpass
		  authentication:
		    superuser:
		      username: postgres
		      password: "$HA_PG_SUPER_PASSWORD"
		    replication:
		      username: replicator
		      password: "$HA_PG_REPL_PASSWORD"
		    rewind:
		      username: postgres
		      password: "$HA_PG_SUPER_PASSWORD"
		  parameters:
		    unix_socket_directories: $DIR/pg/$m-sock
		  pg_hba:
		    - local all all trust
		    - host replication replicator 127.0.0.1/32 scram-sha-256
		    - host all all 127.0.0.1/32 scram-sha-256
	EOF
	chmod 0600 "$DIR/$m.yml"
	chown postgres: "$DIR/$m.yml" "$DIR/pg/$m-sock"
}

write_haproxy_conf() {
	local i m
	{
		cat <<-EOF
			global
			  maxconn 4000
			  stats socket $DIR/run/haproxy.sock mode 600 level admin
			  log stderr format short local0 warning
			defaults
			  mode tcp
			  log global
			  timeout connect 2s
			  timeout client 10m
			  timeout server 10m
			  timeout check 2s
			  retries 3
			  option redispatch
			# The registry: only the member whose Patroni answers /primary
			# 200 (it holds the leader key and runs as primary) gets
			# connections; when it stops, its sessions are cut so the
			# replicas' pools reconnect to the new leader.
			listen pg
			  bind 127.0.0.1:$HA_PG_PORT
			  option httpchk
			  http-check send meth GET uri /primary
			  http-check expect status 200
			  default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
		EOF
		i=0
		for m in "${MEMBERS[@]}"; do
			i=$((i + 1))
			local pg_var="HA_${m^^}_PG" rest_var="HA_${m^^}_REST"
			echo "  server $m 127.0.0.1:${!pg_var} check port ${!rest_var}"
		done
		cat <<-EOF
			# The replicas: TLS passes through (mode tcp), so devices' and
			# OBFs' client certificates reach credfactory; health is /readyz
			# on each replica's operations listener. /readyz includes the
			# registry, so while the database fails over every replica is
			# unready at once: then the backups (the same processes, not
			# checked; a dead one's connections are redispatched) take the
			# traffic, and clients get 503 with Retry-After from credfactory
			# instead of refused connections.
			# A replica marked down keeps its open connections (no
			# shutdown-sessions): an unready replica still answers, with 503
			# and Retry-After, and a dead one has dropped them anyway.
			listen https
			  bind 127.0.0.1:$HA_HTTPS_PORT
			  balance leastconn
			  option allbackups
			  option httpchk
			  http-check send meth GET uri /readyz
			  http-check expect status 200
			  default-server inter 500ms fall 2 rise 2
		EOF
		for i in $(seq 1 "$HA_REPLICAS"); do
			local port_var="HA_REPLICA${i}_PORT" ops_var="HA_REPLICA${i}_OPS"
			echo "  server r$i 127.0.0.1:${!port_var} check port ${!ops_var}"
		done
		for i in $(seq 1 "$HA_REPLICAS"); do
			local port_var="HA_REPLICA${i}_PORT"
			echo "  server r${i}-live 127.0.0.1:${!port_var} backup"
		done
	} >"$DIR/haproxy.cfg"
}

psql_leader() { # sql...
	local m port_var
	m=$(leader)
	[ -n "$m" ] || die "no leader"
	port_var="HA_${m^^}_PG"
	runuser -u postgres -- "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR/pg/$m-sock" -p "${!port_var}" -U postgres -d postgres "$@"
}

has_leader() { [ -n "$(leader)" ]; }

# The member Patroni's REST says is primary (200 on /primary), if any.
leader() {
	local m rest_var
	for m in "${MEMBERS[@]}"; do
		rest_var="HA_${m^^}_REST"
		if http_ok "http://127.0.0.1:${!rest_var}/primary"; then
			echo "$m"
			return 0
		fi
	done
}

# On a failed up: the logs' tails, then everything stopped and removed.
up_failed() {
	local f
	for f in "$DIR"/log/*.log; do
		[ -f "$f" ] || continue
		log "--- $f"
		tail -n 15 "$f" >&2
	done
	log "up failed; removing $DIR"
	cmd_down_quiet
}

cmd_up() {
	cmd_install
	if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
		die "$DIR exists and is not empty"
	fi
	mkdir -p "$DIR"
	chmod 0755 "$DIR"
	touch "$DIR/$MARKER"
	# The process the cluster belongs to (a go test binary, a shell):
	# deploy/dev/test.sh stops clusters whose owner is gone.
	echo "${OWNER_PID:-$PPID}" >"$DIR/owner-pid"
	# The unix socket path limit (107 bytes) applies under DIR/pg.
	[ "${#DIR}" -le 60 ] || die "DIR path too long for PostgreSQL's unix sockets: $DIR"
	mkdir -p "$DIR/run" "$DIR/log" "$DIR/pg" "$DIR/etcd"
	chmod 0700 "$DIR/etcd"
	chown postgres: "$DIR/pg" "$DIR/log"
	chmod 0700 "$DIR/pg"
	trap 'up_failed' EXIT

	HA_REPLICAS=${REPLICAS:-3}
	HA_BIN=${CREDFACTORY_BIN:-}
	if [ -z "$HA_BIN" ]; then
		log "building credfactory"
		(cd "$ROOT" && ${GO:-go} build -buildvcs=false -o "$DIR/credfactory" ./cmd/credfactory)
		HA_BIN=$DIR/credfactory
	fi
	HA_ETCD_PORT=$(free_port)
	HA_ETCD_PEER=$(free_port)
	HA_PG_PORT=$(free_port)
	HA_HTTPS_PORT=$(free_port)
	HA_PG_SUPER_PASSWORD=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
	HA_PG_REPL_PASSWORD=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
	local app_pw m i
	app_pw=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
	HA_STORE_URL="postgres://credfactory:$app_pw@127.0.0.1:$HA_PG_PORT/credfactory?sslmode=disable"
	umask 077
	{
		echo "HA_DIR=$DIR"
		echo "HA_BIN=$HA_BIN"
		echo "HA_REPLICAS=$HA_REPLICAS"
		echo "HA_HSM_LATENCY=${HSM_LATENCY:-}"
		echo "HA_ETCD_PORT=$HA_ETCD_PORT"
		echo "HA_PG_PORT=$HA_PG_PORT"
		echo "HA_HTTPS_PORT=$HA_HTTPS_PORT"
		echo "HA_HTTPS_URL=https://localhost:$HA_HTTPS_PORT"
		echo "HA_STORE_URL=$HA_STORE_URL"
		echo "HA_PG_SUPER_PASSWORD=$HA_PG_SUPER_PASSWORD"
		echo "HA_PG_REPL_PASSWORD=$HA_PG_REPL_PASSWORD"
		echo "HA_HAPROXY_SOCKET=$DIR/run/haproxy.sock"
		echo "HA_MEMBERS=\"${MEMBERS[*]}\""
		for m in "${MEMBERS[@]}"; do
			echo "HA_${m^^}_PG=$(free_port)"
			echo "HA_${m^^}_REST=$(free_port)"
		done
		for i in $(seq 1 "$HA_REPLICAS"); do
			echo "HA_REPLICA${i}_PORT=$(free_port)"
			echo "HA_REPLICA${i}_OPS=$(free_port)"
		done
	} >"$DIR/cluster.env"
	umask 022
	load_env

	log "etcd on 127.0.0.1:$HA_ETCD_PORT"
	bg etcd root /usr/bin/etcd --name e1 --data-dir "$DIR/etcd" \
		--listen-client-urls "http://127.0.0.1:$HA_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$HA_ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$HA_ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$HA_ETCD_PEER" \
		--initial-cluster "e1=http://127.0.0.1:$HA_ETCD_PEER" --initial-cluster-state new --enable-v2=true --log-level warn
	wait_for 30 etcd http_ok "http://127.0.0.1:$HA_ETCD_PORT/health"

	for m in "${MEMBERS[@]}"; do
		local pg_var="HA_${m^^}_PG" rest_var="HA_${m^^}_REST"
		write_member_conf "$m" "${!rest_var}" "${!pg_var}"
	done
	# The first member bootstraps alone, then the others clone it: three
	# initdb races would only waste the CPU.
	log "Patroni member m1 bootstraps PostgreSQL ($("$PGBIN/postgres" --version))"
	start_member m1
	wait_for 90 "a Patroni leader" has_leader
	for m in "${MEMBERS[@]:1}"; do
		start_member "$m"
	done
	psql_leader <<-EOF
		CREATE ROLE credfactory LOGIN PASSWORD '$app_pw';
		CREATE DATABASE credfactory OWNER credfactory;
	EOF

	write_haproxy_conf
	log "HAProxy: PostgreSQL leader on 127.0.0.1:$HA_PG_PORT, HTTPS on 127.0.0.1:$HA_HTTPS_PORT"
	bg haproxy root /usr/sbin/haproxy -db -f "$DIR/haproxy.cfg"
	wait_for 30 "HAProxy's PostgreSQL port" bash -c "echo > /dev/tcp/127.0.0.1/$HA_PG_PORT"

	# One key ceremony, its output copied to every replica: the dev
	# stand-in for one network HSM cluster whose members hold the same keys
	# (README "High availability" says how production shares them).
	log "credfactory init (one ceremony) and $HA_REPLICAS replicas"
	"$HA_BIN" init --data-dir "$DIR/r1" >"$DIR/log/init.log" 2>&1 || {
		cat "$DIR/log/init.log" >&2
		die "credfactory init failed"
	}
	for i in $(seq 2 "$HA_REPLICAS"); do
		cp -a "$DIR/r1" "$DIR/r$i"
		# SoftHSM's config names its token directory by absolute path.
		sed -i "s#^directories.tokendir = .*#directories.tokendir = $DIR/r$i/hsm/tokens#" "$DIR/r$i/hsm/softhsm2.conf"
	done
	# Migrations and the bench accounts once, through HAProxy.
	(
		export CREDFACTORY_STORE_URL="$HA_STORE_URL" CREDFACTORY_PASSWORD=ha-password-not-secret
		"$HA_BIN" migrate --data-dir "$DIR/r1" >>"$DIR/log/init.log" 2>&1
		"$HA_BIN" admin create-stakeholder --data-dir "$DIR/r1" --name bench-maker --role manufacturer >>"$DIR/log/init.log" 2>&1
		"$HA_BIN" admin create-stakeholder --data-dir "$DIR/r1" --name bench-admin --role sp-admin >>"$DIR/log/init.log" 2>&1
		umask 077
		"$HA_BIN" admin create-api-key --data-dir "$DIR/r1" --stakeholder bench-maker >"$DIR/maker.key"
		"$HA_BIN" admin create-api-key --data-dir "$DIR/r1" --stakeholder bench-admin >"$DIR/admin.key"
	) || {
		cat "$DIR/log/init.log" >&2
		die "migrate or accounts failed"
	}
	for i in $(seq 1 "$HA_REPLICAS"); do
		start_replica "$i"
	done
	for i in $(seq 1 "$HA_REPLICAS"); do
		local ops_var="HA_REPLICA${i}_OPS"
		wait_for 60 "replica $i ready" http_ok "http://127.0.0.1:${!ops_var}/readyz"
	done
	wait_for 60 "both standbys streaming" standbys_streaming
	trap - EXIT
	log "up: $HA_HTTPS_URL (anchor $DIR/r1/trust-anchor.pem); env in $DIR/cluster.env"
	echo "$DIR/cluster.env"
}

# Both standbys stream from the leader, one of them synchronously.
standbys_streaming() {
	[ "$(psql_leader -Atc "SELECT count(*) FILTER (WHERE state = 'streaming'), count(*) FILTER (WHERE sync_state = 'sync') FROM pg_stat_replication" 2>/dev/null)" = "2|1" ]
}

cmd_status() {
	load_env
	local m i rest_var ops_var
	for m in "${MEMBERS[@]}"; do
		rest_var="HA_${m^^}_REST"
		printf '%s: %s\n' "$m" "$(curl -fsS -m 2 "http://127.0.0.1:${!rest_var}/patroni" 2>/dev/null |
			sed -n 's/.*"state": *"\([^"]*\)".*"role": *"\([^"]*\)".*/\2 \1/p' || true)"
	done
	curl -fsS -m 2 "http://127.0.0.1:$HA_M1_REST/cluster" 2>/dev/null || true
	echo
	for i in $(seq 1 "$HA_REPLICAS"); do
		ops_var="HA_REPLICA${i}_OPS"
		printf 'replica %s: %s\n' "$i" "$(curl -sS -m 2 "http://127.0.0.1:${!ops_var}/readyz" 2>&1 || true)"
	done
	haproxy_cmd "show servers state" 2>/dev/null || true
}

# haproxy_cmd CMD: one command on HAProxy's admin socket.
haproxy_cmd() {
	/usr/bin/python3 - "$HA_HAPROXY_SOCKET" "$1" <<-'EOF'
		import socket, sys
		s = socket.socket(socket.AF_UNIX)
		s.connect(sys.argv[1])
		s.sendall(sys.argv[2].encode() + b"\n")
		out = b""
		while True:
		    b = s.recv(65536)
		    if not b:
		        break
		    out += b
		sys.stdout.write(out.decode())
	EOF
}

cmd_scale() {
	local n=$1 i state
	[ "$n" -ge 1 ] && [ "$n" -le "$HA_REPLICAS" ] || die "scale: 1..$HA_REPLICAS"
	for i in $(seq 1 "$HA_REPLICAS"); do
		state=ready
		[ "$i" -le "$n" ] || state=maint
		haproxy_cmd "set server https/r$i state $state" >/dev/null
		haproxy_cmd "set server https/r$i-live state $state" >/dev/null
	done
	log "HAProxy routes HTTPS to replicas 1..$n"
}

cmd_down_quiet() {
	local name f
	trap - EXIT
	for f in "$DIR"/run/*.pid; do
		[ -f "$f" ] || continue
		name=$(basename "$f" .pid)
		stop_pid "$name" TERM
	done
	sleep 1
	for f in "$DIR"/run/*.pid; do
		[ -f "$f" ] || continue
		name=$(basename "$f" .pid)
		stop_pid "$name" KILL
	done
	# A postmaster whose Patroni died (kill -9 of the member) is its own
	# session leader's child no more: stop it by its pid file.
	local m pid
	for m in "${MEMBERS[@]}"; do
		if [ -f "$DIR/pg/$m/postmaster.pid" ]; then
			pid=$(head -n1 "$DIR/pg/$m/postmaster.pid")
			if [ -n "$pid" ] && [ "$(stat -c %U "/proc/$pid" 2>/dev/null)" = postgres ]; then
				kill -KILL "$pid" 2>/dev/null || true
			fi
		fi
	done
	sleep 0.5
	[ -e "$DIR/$MARKER" ] && rm -rf -- "$DIR"
	return 0
}

cmd_down() {
	[ -e "$DIR" ] || return 0
	[ -e "$DIR/$MARKER" ] || die "$DIR was not made by $SELF; not removing it"
	cmd_down_quiet
	log "stopped and removed $DIR"
}

[ $# -ge 1 ] || usage
sub=$1
shift
if [ "$sub" = install ]; then
	cmd_install
	exit 0
fi
[ $# -ge 1 ] && [ -n "$1" ] || usage
DIR=$(readlink -m -- "$1")
shift
[ "$DIR" != / ] || die "refusing DIR=/"
cd /

case "$sub" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
start-member)
	load_env
	start_member "${1:?member name}"
	;;
start-replica)
	load_env
	start_replica "${1:?replica number}"
	;;
account)
	load_env
	CREDFACTORY_STORE_URL="$HA_STORE_URL" CREDFACTORY_PASSWORD=ha-password-not-secret \
		"$HA_BIN" admin create-stakeholder --data-dir "$DIR/r1" --name "${1:?account name}" --role manufacturer >/dev/null
	CREDFACTORY_STORE_URL="$HA_STORE_URL" "$HA_BIN" admin create-api-key --data-dir "$DIR/r1" --stakeholder "$1"
	;;
scale)
	load_env
	cmd_scale "${1:?number of replicas}"
	;;
*) usage ;;
esac
