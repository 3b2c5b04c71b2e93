package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/credfactory/credfactory/reqid"
)

// Options tune a Store. Zero values take the defaults.
type Options struct {
	// MaxConns bounds the PostgreSQL/CockroachDB pool (default 16) or the
	// SQLite read pool (default 4; SQLite always has one writer).
	MaxConns int
	// MaxRetries bounds the retries of one transaction after serialization
	// failures or lost connections (default 10).
	MaxRetries int
	// RetryBackoff is the first wait before a retry (default 2ms); each
	// further retry doubles it up to RetryBackoffMax (default 250ms). Every
	// wait is drawn uniformly from [0, the bound] ("full jitter"), so
	// transactions that conflicted together do not retry together.
	RetryBackoff    time.Duration
	RetryBackoffMax time.Duration
	// TxTimeout bounds one transaction attempt (default 10s).
	TxTimeout time.Duration
	Observer  Observer
}

// querier is what a transaction body sees: the same three calls on both
// backends, with DML in PostgreSQL syntax.
type querier interface {
	exec(ctx context.Context, sql string, args ...any) (int64, error)
	query(ctx context.Context, sql string, args ...any) (rows, error)
	queryRow(ctx context.Context, sql string, args ...any) row
	// execBatch runs statements in order and returns their row counts; on
	// PostgreSQL they travel in one round trip.
	execBatch(ctx context.Context, stmts []stmt) ([]int64, error)
}

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

type row interface{ Scan(dest ...any) error }

// backend is the part of the store that differs between engines.
type backend interface {
	// tx runs fn in a serializable read-write transaction, retrying it on
	// serialization failures and lost connections; it returns the retries.
	tx(ctx context.Context, fn func(q querier) error) (retries int, err error)
	// read runs fn on a consistent read-only view.
	read(ctx context.Context, fn func(q querier) error) error
	ddl() dialect
	ping(ctx context.Context) error
	close()
	// classify maps a driver error to ErrConflict, ErrUnavailable or itself.
	classify(err error) error
	name() string
}

// Store is the registry database. It is safe for concurrent use.
type Store struct {
	b   backend
	obs Observer
	opt Options
	// tokens group-commits token transactions on SQLite (nil elsewhere).
	tokens *groupCommit
}

// Open connects to url: "sqlite:///path/to/file.db", "postgres://..." or
// "postgresql://..." (CockroachDB is detected from the server's version).
// It does not migrate; call Migrate.
func Open(ctx context.Context, url string, opt Options) (*Store, error) {
	if opt.MaxRetries == 0 {
		opt.MaxRetries = 10
	}
	if opt.RetryBackoff <= 0 {
		opt.RetryBackoff = 2 * time.Millisecond
	}
	if opt.RetryBackoffMax <= 0 {
		opt.RetryBackoffMax = 250 * time.Millisecond
	}
	opt.RetryBackoffMax = max(opt.RetryBackoffMax, opt.RetryBackoff)
	if opt.TxTimeout == 0 {
		opt.TxTimeout = 10 * time.Second
	}
	if opt.Observer == nil {
		opt.Observer = nopObserver{}
	}
	var (
		b   backend
		err error
	)
	switch {
	case strings.HasPrefix(url, "sqlite://"):
		if opt.MaxConns == 0 {
			opt.MaxConns = 4
		}
		b, err = openSQLite(strings.TrimPrefix(url, "sqlite://"), opt)
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		if opt.MaxConns == 0 {
			opt.MaxConns = 16
		}
		b, err = openPostgres(ctx, url, opt)
	default:
		return nil, fmt.Errorf("store URL %q: want sqlite:///path or postgres://", redact(url))
	}
	if err != nil {
		return nil, err
	}
	st := &Store{b: b, obs: opt.Observer, opt: opt}
	if b.name() == "sqlite" {
		st.tokens = newGroupCommit(st, "create_enrolment", tokenRefusal)
	}
	return st, nil
}

// Close waits for queued token transactions and releases the connections.
func (s *Store) Close() {
	if s.tokens != nil {
		s.tokens.close()
	}
	s.b.close()
}

// Backend names the engine: "sqlite", "postgres" or "cockroachdb".
func (s *Store) Backend() string { return s.b.name() }

// Ping checks the database answers, for /readyz.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.b.ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// tx runs fn in a retried serializable transaction and reports it.
func (s *Store) tx(ctx context.Context, op string, fn func(q querier) error) error {
	start := time.Now()
	retries, err := s.b.tx(ctx, fn)
	err = s.b.classify(err)
	s.obs.ObserveTx(op, time.Since(start), retries, err)
	return err
}

// rowGuardedBackend is a backend with a cheaper isolation level for
// transactions whose every invariant is guarded by a row they write.
type rowGuardedBackend interface {
	txRowGuarded(ctx context.Context, fn func(q querier) error) (retries int, err error)
}

// txRowGuarded is tx for a transaction in which every pair of concurrent
// runs that could break an invariant writes one common row: the device's
// (a token, a wrong claim code) or the account's (a wrong claim code, an
// attempt reaching the account's limit). On PostgreSQL it runs under
// snapshot isolation, where the second writer of a row fails with
// SQLSTATE 40001 and retries, which is then exactly as strong as
// SERIALIZABLE for it, without PostgreSQL's predicate locks: those lock
// whole B-tree pages, so that tokens for neighbouring device IDs
// (sequential serial numbers, as factories make them) conflict through the
// index pages they share though they share no row. A row the transaction
// only reads (the account's claim lock, read by a token) is allowed when
// whoever writes that row reads nothing the transaction writes, so no
// cycle of dependencies can form; anything else belongs in tx. SQLite has
// one writer at a time anyway.
func (s *Store) txRowGuarded(ctx context.Context, op string, fn func(q querier) error) error {
	rg, ok := s.b.(rowGuardedBackend)
	if !ok {
		return s.tx(ctx, op, fn)
	}
	start := time.Now()
	retries, err := rg.txRowGuarded(ctx, fn)
	err = s.b.classify(err)
	s.obs.ObserveTx(op, time.Since(start), retries, err)
	return err
}

func (s *Store) read(ctx context.Context, fn func(q querier) error) error {
	// Bounded like a transaction attempt: a black-holed database must not
	// hang a request for the TCP timeout.
	ctx, cancel := context.WithTimeout(reqid.Detached(ctx), s.opt.TxTimeout)
	defer cancel()
	err := s.b.read(ctx, fn)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		return fmt.Errorf("%w: read timed out after %v", ErrUnavailable, s.opt.TxTimeout)
	}
	return s.b.classify(err)
}

// redact drops the password from a URL for error messages: the userinfo
// and any password= query parameter (libpq accepts both).
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable store URL>"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
