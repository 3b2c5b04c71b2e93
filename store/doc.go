// Package store is the one place that knows SQL. It keeps credfactory's
// registry (stakeholders, API keys, OBFs, devices, enrolments, credentials,
// audit events) on two backends behind one Go type:
//
//   - an embedded SQLite file (mattn/go-sqlite3, SQLite's C through cgo, WAL,
//     synchronous=FULL so a commit is durable before a credential leaves),
//     with one writer connection and a pool of read-only ones;
//   - CockroachDB or PostgreSQL through pgx v5, every transaction at
//     SERIALIZABLE. On CockroachDB, cockroach-go's crdbpgxv5.ExecuteTx
//     retries SQLSTATE 40001 with its RELEASE SAVEPOINT cockroach_restart
//     protocol; on PostgreSQL a plain BEGIN/COMMIT retry loop does the same
//     job, because crdb.ExecuteInTx ignores the COMMIT result, which only
//     CockroachDB makes safe (on PostgreSQL a serialization failure can be
//     reported at COMMIT and would be lost).
//
// DML is written once, in PostgreSQL syntax with $N parameters; the SQLite
// backend rewrites the placeholders and stores times as integer
// microseconds. DDL is written once with type tokens each dialect fills in.
// Keys are random (token hashes, UUIDs, Credential-IDs ending in random
// hex): no sequences, so CockroachDB spreads writes evenly.
//
// Enrolments commit in groups: concurrent redemptions share one transaction
// (see Batcher), with a result per item, and a bad item never fails its
// neighbours.
package store
