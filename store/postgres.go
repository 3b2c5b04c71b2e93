package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
	crdbpgx "github.com/cockroachdb/cockroach-go/v2/crdb/crdbpgxv5"
	"github.com/credfactory/credfactory/reqid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

type postgres struct {
	pool        *pgxpool.Pool
	cockroach   bool
	maxRetries  int
	attemptTime time.Duration
	retry       retryWait
}

func openPostgres(ctx context.Context, url string, opt Options) (*postgres, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("store URL %s: %w", redact(url), err)
	}
	cfg.MaxConns = int32(opt.MaxConns)
	// Connections come back by themselves after the server restarts: the
	// pool drops broken ones and dials new ones on demand.
	cfg.HealthCheckPeriod = 5 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", redact(url), err)
	}
	p := &postgres{pool: pool, maxRetries: opt.MaxRetries, attemptTime: opt.TxTimeout,
		retry: retryWait{base: opt.RetryBackoff, max: opt.RetryBackoffMax}}
	var version string
	if err := pool.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		pool.Close()
		return nil, fmt.Errorf("%w: connect %s: %w", ErrUnavailable, redact(url), err)
	}
	p.cockroach = strings.Contains(version, "CockroachDB")
	return p, nil
}

func (p *postgres) name() string {
	if p.cockroach {
		return "cockroachdb"
	}
	return "postgres"
}

func (p *postgres) close() { p.pool.Close() }

func (p *postgres) ping(ctx context.Context) error { return p.pool.Ping(ctx) }

func (p *postgres) ddl() dialect {
	if p.cockroach {
		return crdbDialect
	}
	return pgDialect
}

var serializable = pgx.TxOptions{IsoLevel: pgx.Serializable, AccessMode: pgx.ReadWrite}

// pgSerializable is serializable on PostgreSQL with sequential scans priced
// out for the transaction. Under SERIALIZABLE a sequential scan takes a
// predicate lock on the whole table, so any two transactions that scan
// and write one table conflict (SQLSTATE 40001), and the planner picks
// that scan for key lookups whenever a table is a page or two: at the
// start of every registry. With it off, every statement that an index can
// serve is served by one, locking only the index pages it reads, whatever
// the table's size. One simple-protocol message: no extra round trip.
var pgSerializable = pgx.TxOptions{BeginQuery: "BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE; SET LOCAL enable_seqscan = off"}

func (p *postgres) tx(ctx context.Context, fn func(q querier) error) (int, error) {
	if p.cockroach {
		return p.txCockroach(ctx, fn)
	}
	return p.txPostgres(ctx, pgSerializable, fn)
}

// pgRowGuarded is snapshot isolation (PostgreSQL's REPEATABLE READ): no
// predicate locks, and of two concurrent transactions that update one row
// the second fails with SQLSTATE 40001 and is retried.
var pgRowGuarded = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadWrite}

// txRowGuarded runs fn under snapshot isolation on PostgreSQL (see
// Store.txRowGuarded for when that is as good as serializable).
// CockroachDB keeps SERIALIZABLE: its read locks are exact key spans, not
// pages, so it has no false conflicts to avoid.
func (p *postgres) txRowGuarded(ctx context.Context, fn func(q querier) error) (int, error) {
	if p.cockroach {
		return p.txCockroach(ctx, fn)
	}
	return p.txPostgres(ctx, pgRowGuarded, fn)
}

// txCockroach is cockroach-go's retry protocol; a lost connection is
// retried around it, which is safe because every write we make is
// idempotent on replay (redemptions match on request ID).
func (p *postgres) txCockroach(ctx context.Context, fn func(q querier) error) (int, error) {
	attempts := 0
	return p.retryUnavailable(ctx, func(ctx context.Context) error {
		return crdbpgx.ExecuteTx(crdb.WithMaxRetries(ctx, p.maxRetries), p.pool, serializable, func(tx pgx.Tx) error {
			attempts++
			return fn(pgQuerier{tx})
		})
	}, &attempts)
}

// txPostgres retries the whole transaction on serialization failures and
// deadlocks, checking COMMIT's result, where PostgreSQL reports many of them.
func (p *postgres) txPostgres(ctx context.Context, opts pgx.TxOptions, fn func(q querier) error) (int, error) {
	attempts := 0
	return p.retryUnavailable(ctx, func(ctx context.Context) error {
		for {
			attempts++
			err := p.attempt(ctx, opts, fn)
			if err == nil || !serializationFailure(err) || attempts > p.maxRetries {
				return err
			}
			p.retry.wait(ctx, attempts)
		}
	}, &attempts)
}

func (p *postgres) attempt(ctx context.Context, opts pgx.TxOptions, fn func(q querier) error) error {
	ctx, cancel := context.WithTimeout(reqid.Detached(ctx), p.attemptTime)
	defer cancel()
	tx, err := p.pool.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	if err := fn(pgQuerier{tx}); err != nil {
		_ = tx.Rollback(ctx)
		return err
	}
	return tx.Commit(ctx)
}

// retryUnavailable reruns run while the database is unreachable, up to
// maxRetries or the caller's deadline. *attempts counts every run of the
// transaction body, so retries = attempts - 1.
func (p *postgres) retryUnavailable(ctx context.Context, run func(ctx context.Context) error, attempts *int) (int, error) {
	for i := 0; ; i++ {
		err := run(ctx)
		if err == nil || !connectionLost(err) || i >= p.maxRetries || ctx.Err() != nil {
			return max(*attempts-1, 0), err
		}
		p.retry.wait(ctx, i+1)
	}
}

func (p *postgres) read(ctx context.Context, fn func(q querier) error) error {
	// A single read does not need a transaction: each statement sees a
	// consistent snapshot. Multi-statement reads that must agree use tx.
	return fn(pgQuerier{p.pool})
}

func serializationFailure(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// connectionLost: the server is unreachable, restarting, or dropped the
// connection. Any server-reported error other than a shutdown is not.
func connectionLost(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08 connection exceptions, 57P01-57P03 shutdown/cannot connect now.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03" ||
			onStandby(pgErr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var netErr net.Error
	var connErr *pgconn.ConnectError
	return errors.As(err, &netErr) || errors.As(err, &connErr) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed")
}

// onStandby: the connection reached a server that is (still) a standby,
// which a failover causes: the load balancer routes to a member that
// Patroni has just made leader while PostgreSQL is still finishing its
// promotion, or a standby whose demotion the pool has not noticed. The
// transaction was refused before it wrote anything, and a retry reaches the
// promoted primary: 25006 read_only_sql_transaction, and 0A000 for the
// SERIALIZABLE transactions this store runs ("cannot use serializable mode
// in a hot standby").
func onStandby(pgErr *pgconn.PgError) bool {
	return pgErr.Code == "25006" || pgErr.Code == "0A000" && strings.Contains(pgErr.Message, "hot standby")
}

func (p *postgres) classify(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &pgErr) && pgErr.Code == "23505":
		return fmt.Errorf("%w: %s", ErrConflict, pgErr.ConstraintName)
	case errors.As(err, &pgErr) && (pgErr.Code == "42P07" || pgErr.Code == "42710"):
		// duplicate_table / duplicate_object: only DDL meets these, when
		// another replica's migration created the object first.
		return fmt.Errorf("%w: %s", ErrConflict, pgErr.Message)
	case connectionLost(err):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case serializationFailure(err):
		// The database answered every attempt: this is contention, not an
		// outage, and the client is not told the registry is down.
		return fmt.Errorf("%w: %w", ErrContention, err)
	}
	return err
}

// pgQuerier adapts a pgx.Tx or pool.
type pgQuerier struct {
	db interface {
		Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
		Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
		QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	}
}

func (q pgQuerier) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := q.db.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}

func (q pgQuerier) query(ctx context.Context, sql string, args ...any) (rows, error) {
	r, err := q.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (q pgQuerier) queryRow(ctx context.Context, sql string, args ...any) row {
	return pgRow{q.db.QueryRow(ctx, sql, args...)}
}

// execBatch pipelines the statements: one round trip for the lot.
func (q pgQuerier) execBatch(ctx context.Context, stmts []stmt) ([]int64, error) {
	sender, ok := q.db.(interface {
		SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	})
	if !ok {
		return nil, fmt.Errorf("store: batch outside a transaction")
	}
	var b pgx.Batch
	for _, s := range stmts {
		b.Queue(s.sql, s.args...)
	}
	res := sender.SendBatch(ctx, &b)
	counts := make([]int64, len(stmts))
	for i := range stmts {
		tag, err := res.Exec()
		if err != nil {
			res.Close()
			return nil, err
		}
		counts[i] = tag.RowsAffected()
	}
	return counts, res.Close()
}

type pgRow struct{ r pgx.Row }

func (r pgRow) Scan(dest ...any) error {
	err := r.r.Scan(dest...)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}
