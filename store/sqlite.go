package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/credfactory/credfactory/reqid"
	sqlite3 "github.com/mattn/go-sqlite3"
)

// sqliteDB is the embedded backend: one writer connection (SQLite has one
// writer at a time; BEGIN IMMEDIATE takes the lock up front, so two writers
// never deadlock upgrading a read lock) and a pool of read-only readers that
// WAL lets run beside it.
type sqliteDB struct {
	w, r       *sql.DB
	maxRetries int
	timeout    time.Duration
	ckpt       *checkpointer
}

func openSQLite(path string, opt Options) (*sqliteDB, error) {
	if path == "" {
		return nil, errors.New("store URL sqlite://: no file path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store directory: %w", err)
	}
	// mattn/go-sqlite3 runs SQLite's own C through cgo, which the binary
	// needs anyway for PKCS#11; modernc.org/sqlite's Go translation of it
	// cost more CPU per redemption (bench/README.md, "Registry engine").
	pragmas := url.Values{
		"_journal_mode": {"WAL"},
		// FULL: a commit is on disk before a credential is handed out.
		"_synchronous":  {"FULL"},
		"_busy_timeout": {"10000"},
		"_foreign_keys": {"on"},
		// SQLite parses and plans a statement on every prepare, which cost
		// as much as running the hot path's key lookups (the token check
		// before every enrolment, the redemption's writes): the driver
		// keeps prepared statements per connection, inside transactions
		// too. Texts built per call (IN lists of varying length) take
		// their turn in it and fall out.
		"_stmt_cache_size": {"128"},
	}
	writer := maps.Clone(pragmas)
	writer.Set("_txlock", "immediate")
	w, err := sql.Open(sqliteWriterDriver(), "file:"+path+"?"+writer.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	reader := maps.Clone(pragmas)
	reader.Set("_query_only", "true")
	// The writer creates the file and switches it to WAL first.
	if err := w.Ping(); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r, err := sql.Open("sqlite3", "file:"+path+"?"+reader.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r.SetMaxOpenConns(opt.MaxConns)
	r.SetMaxIdleConns(opt.MaxConns)
	if err := os.Chmod(path, 0o600); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("store file mode: %w", err)
	}
	db := &sqliteDB{w: w, r: r, maxRetries: opt.MaxRetries, timeout: opt.TxTimeout}
	// Not query-only: a checkpoint writes the database file.
	c, err := sql.Open("sqlite3", "file:"+path+"?"+pragmas.Encode())
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	c.SetMaxOpenConns(1)
	db.ckpt = startCheckpointer(c)
	return db, nil
}

func (s *sqliteDB) name() string { return "sqlite" }
func (s *sqliteDB) ddl() dialect { return sqliteDialect }
func (s *sqliteDB) close() {
	if s.ckpt != nil {
		s.ckpt.stop()
	}
	s.w.Close()
	s.r.Close()
}
func (s *sqliteDB) ping(ctx context.Context) error {
	return s.r.PingContext(ctx)
}

func (s *sqliteDB) tx(ctx context.Context, fn func(q querier) error) (int, error) {
	for attempt := 0; ; attempt++ {
		err := s.attempt(ctx, fn)
		if err == nil || !busy(err) || attempt >= s.maxRetries || ctx.Err() != nil {
			return attempt, err
		}
		backoff(ctx, attempt+1)
	}
}

func (s *sqliteDB) attempt(ctx context.Context, fn func(q querier) error) error {
	ctx, cancel := context.WithTimeout(reqid.Detached(ctx), s.timeout)
	defer cancel()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(sqliteQuerier{db: tx}); err != nil { // bounded by ctx's timeout through tx
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

func (s *sqliteDB) read(ctx context.Context, fn func(q querier) error) error {
	return fn(sqliteQuerier{db: s.r})
}

func busy(err error) bool {
	var e sqlite3.Error
	return errors.As(err, &e) && (e.Code == sqlite3.ErrBusy || e.Code == sqlite3.ErrLocked)
}

func (s *sqliteDB) classify(err error) error {
	var e sqlite3.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e) && (e.ExtendedCode == sqlite3.ErrConstraintUnique || e.ExtendedCode == sqlite3.ErrConstraintPrimaryKey):
		return fmt.Errorf("%w: %s", ErrConflict, e.Error())
	case busy(err):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

type sqlDB interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// sqliteQuerier runs PostgreSQL-syntax DML on SQLite: $N placeholders
// become ?N, and times travel as integer microseconds since the epoch so
// they compare and sort as numbers.
type sqliteQuerier struct{ db sqlDB }

// ctx detaches a statement from its caller's cancellation. The driver
// watches a cancellable context with context.AfterFunc, which for a context
// that is not the standard library's (the front end passes fasthttp's
// RequestCtx, whose Done closes only at server shutdown) takes a goroutine
// per statement; at shutdown one of them read a RequestCtx fasthttp was
// already recycling (a data race -race caught in the MAF tests). Statements
// here are key lookups, pages and a transaction's writes; a transaction is
// bounded by the timeout context it began with (attempt), and shutdown
// waits for in-flight requests, so nothing is lost.
func (q sqliteQuerier) ctx(ctx context.Context) context.Context {
	return context.WithoutCancel(ctx)
}

var (
	placeholder = regexp.MustCompile(`\$(\d+)`)
	rewritten   sync.Map // PostgreSQL text -> SQLite text
)

func rewrite(q string) string {
	if v, ok := rewritten.Load(q); ok {
		return v.(string)
	}
	// Plain "?" when the placeholders appear in order, each once: SQLite
	// maps "?NNN" through a list it scans linearly per parameter, which
	// made a 4,500-parameter bulk insert spend 70% of its time there.
	inOrder := true
	for i, m := range placeholder.FindAllStringSubmatch(q, -1) {
		if m[1] != strconv.Itoa(i+1) {
			inOrder = false
			break
		}
	}
	repl := "?$1"
	if inOrder {
		repl = "?"
	}
	out := placeholder.ReplaceAllString(q, repl)
	rewritten.Store(q, out)
	return out
}

func (q sqliteQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	ctx = q.ctx(ctx)
	res, err := q.db.ExecContext(ctx, rewrite(query), toSQLite(args)...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqliteQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	ctx = q.ctx(ctx)
	r, err := q.db.QueryContext(ctx, rewrite(query), toSQLite(args)...)
	if err != nil {
		return nil, err
	}
	return sqliteRows{r}, nil
}

func (q sqliteQuerier) queryRow(ctx context.Context, query string, args ...any) row {
	ctx = q.ctx(ctx)
	return sqliteRow{q.db.QueryRowContext(ctx, rewrite(query), toSQLite(args)...)}
}

func (q sqliteQuerier) execBatch(ctx context.Context, stmts []stmt) ([]int64, error) {
	counts := make([]int64, len(stmts))
	for i, s := range stmts {
		n, err := q.exec(ctx, s.sql, s.args...)
		if err != nil {
			return nil, err
		}
		counts[i] = n
	}
	return counts, nil
}

type sqliteRows struct{ r *sql.Rows }

func (r sqliteRows) Next() bool             { return r.r.Next() }
func (r sqliteRows) Scan(dest ...any) error { return r.r.Scan(fromSQLite(dest)...) }
func (r sqliteRows) Err() error             { return r.r.Err() }
func (r sqliteRows) Close()                 { _ = r.r.Close() }

type sqliteRow struct{ r *sql.Row }

func (r sqliteRow) Scan(dest ...any) error {
	err := r.r.Scan(fromSQLite(dest)...)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

func toSQLite(args []any) []any {
	out, copied := args, false
	for i, a := range args {
		var v any
		switch t := a.(type) {
		case time.Time:
			v = t.UnixMicro()
		case *time.Time:
			if t == nil {
				v = nil
			} else {
				v = t.UnixMicro()
			}
		default:
			continue
		}
		if !copied {
			out, copied = append([]any(nil), args...), true
		}
		out[i] = v
	}
	return out
}

func fromSQLite(dest []any) []any {
	out, copied := dest, false
	for i, d := range dest {
		var s sql.Scanner
		switch t := d.(type) {
		case *time.Time:
			s = microTime{t: t}
		case **time.Time:
			s = microTime{pt: t}
		default:
			continue
		}
		if !copied {
			out, copied = append([]any(nil), dest...), true
		}
		out[i] = s
	}
	return out
}

// microTime scans integer microseconds into a time.Time (or *time.Time for
// a nullable column).
type microTime struct {
	t  *time.Time
	pt **time.Time
}

func (m microTime) Scan(src any) error {
	if src == nil {
		if m.pt != nil {
			*m.pt = nil
			return nil
		}
		return errors.New("store: NULL time in a NOT NULL column")
	}
	n, ok := src.(int64)
	if !ok {
		return fmt.Errorf("store: time column holds %T, want integer microseconds", src)
	}
	t := time.UnixMicro(n).UTC()
	if m.pt != nil {
		*m.pt = &t
	} else {
		*m.t = t
	}
	return nil
}
