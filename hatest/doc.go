// Package hatest holds the high-availability tests: credfactory as three
// replicas behind HAProxy on a PostgreSQL cluster that Patroni fails over
// (synchronous replication, etcd), started by deploy/dev/cluster.sh. The
// tests put the fleet under load with the bench's clients, break parts of
// it (kill -9 the database leader or a replica, freeze the leader's
// Patroni, race one token across replicas), then hold the registry to what
// the clients received with the bench's own verification.
//
// The Debian packages patroni, etcd-server and haproxy (and PostgreSQL 15)
// must be installed; without them the tests skip, except under CI (env CI
// set), where they fail. `make test` installs them when it runs under CI.
// The tests run as root, as the cluster script does.
package hatest
