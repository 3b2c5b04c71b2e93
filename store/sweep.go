package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The expiry sweep marks what has outlived its lifetime: enrolment tokens
// still 'issued' past expires_at become 'expired', credentials still
// 'active' past not_after become 'expired'. Reads never depended on it
// (every check compares times itself); the sweep makes the registry say so,
// for listings, the portal and the CRL/OCSP builders.
//
// Several replicas run it at once, so:
//   - a lease row (table leases) names the one replica that sweeps; it is
//     taken with conditional UPDATE/INSERT in a serializable transaction,
//     and every chunk re-asserts it in its own transaction, so a replica
//     that lost the lease (paused past its TTL) stops at its next chunk;
//   - correctness does not rest on the lease (clocks differ between
//     replicas): every update is conditional on the state it replaces
//     (AND state = 'issued', AND status = 'active') inside a serializable
//     transaction, so a racing revocation, cancellation or redemption is
//     never overwritten, and two sweepers, should both run, change each row
//     once. The lease only saves the duplicate work;
//   - work goes in chunks of bounded size (one transaction each), so no
//     transaction holds many rows and CockroachDB never meets a huge one.
//
// Device state: the sweep does not change devices. A device's state is its
// enrolment relationship (pre-enrolled, token-issued, enrolled, revoked),
// and an enrolled device whose credentials lapsed is still enrolled: it
// keeps its owner and assigned ID, renews or re-enrols from there, and the
// portal shows its credentials' states. Deriving an "enrolment expired"
// device state would cost a per-device aggregate over credentials in every
// chunk and a write to the hot devices table, for a fact the credentials
// already record.

// SweepLease is the lease row's name.
const SweepLease = "expiry-sweep"

// ErrLeaseLost: another replica took the sweep lease mid-sweep.
var ErrLeaseLost = errors.New("store: sweep lease lost to another replica")

// SweepOptions shape one sweep.
type SweepOptions struct {
	// Holder names this replica in the lease (host name and a random part).
	Holder string
	// LeaseTTL is how long the lease lasts unless renewed: a replica that
	// dies holding it is replaced after this long.
	LeaseTTL time.Duration
	// Chunk is the most rows one transaction changes (default 1,000).
	Chunk int
	// Now is the instant compared with expiries (default time.Now()).
	Now time.Time
	// MaxChunks bounds the chunks per kind in one run (default 1,000), so a
	// run ends in bounded time whatever the backlog; the next run goes on.
	MaxChunks int
	// BulkChunkRetention is how long a bulk chunk's record outlives its
	// commit (default 48 hours): at least the longest enrolment token
	// lifetime, after which every token it issued has expired.
	BulkChunkRetention time.Duration
}

// SweepResult is what one sweep did.
type SweepResult struct {
	// Held: this replica held the lease and swept; false means another
	// replica holds it and nothing was done.
	Held        bool
	Tokens      int
	Credentials int
	BulkChunks  int
	ClaimNonces int
}

// TakeLease takes or renews the named lease for holder until now+ttl. It
// succeeds when the lease is free, expired or already holder's, in one
// serializable transaction: of two replicas racing for it, one wins (the
// other's update or insert conflicts and, retried, finds it taken).
func (s *Store) TakeLease(ctx context.Context, name, holder string, ttl time.Duration, now time.Time) (bool, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return false, errors.New("take lease: name, holder and a positive TTL are required")
	}
	var held bool
	err := s.tx(ctx, "lease", func(q querier) error {
		n, err := q.exec(ctx, `UPDATE leases SET holder = $2, expires_at = $3
			WHERE name = $1 AND (holder = $2 OR expires_at <= $4)`, name, holder, now.Add(ttl).UTC(), now.UTC())
		if err != nil || n == 1 {
			held = n == 1
			return err
		}
		n, err = q.exec(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO NOTHING`, name, holder, now.Add(ttl).UTC())
		held = n == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("take lease %s: %w", name, err)
	}
	return held, nil
}

// ReleaseLease gives up holder's lease (a replica shutting down), so
// another may take it at once instead of after its TTL.
func (s *Store) ReleaseLease(ctx context.Context, name, holder string, now time.Time) error {
	err := s.tx(ctx, "lease", func(q querier) error {
		_, err := q.exec(ctx, `UPDATE leases SET expires_at = $3 WHERE name = $1 AND holder = $2`, name, holder, now.UTC())
		return err
	})
	if err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

// sweepKind is one table the sweep walks: an UPDATE of at most $2 rows due
// at $1, conditional on the state it replaces. The inner SELECT carries the
// LIMIT (neither PostgreSQL nor SQLite has a portable UPDATE ... LIMIT) and
// the predicate of the partial index it walks; the outer predicate re-checks
// the state, so even outside a serializable transaction a row that changed
// after the SELECT would be left alone.
type sweepKind struct {
	name string
	sql  string
	// due is the instant $1 compares with (default opt.Now).
	due func(opt SweepOptions) time.Time
}

var sweepKinds = []sweepKind{
	{"token", `UPDATE enrolments SET state = 'expired'
		WHERE token_hash IN (SELECT token_hash FROM enrolments WHERE state = 'issued' AND expires_at <= $1 LIMIT $2)
		AND state = 'issued'`, nil},
	{"credential", `UPDATE credentials SET status = 'expired'
		WHERE id IN (SELECT id FROM credentials WHERE status = 'active' AND not_after <= $1 LIMIT $2)
		AND status = 'active'`, nil},
	// A bulk chunk's record (its rows' fingerprint) lets a retry of a lost
	// answer be recognised and refused if its rows differ. Once every token
	// the chunk could have issued has expired, a retry can only meet
	// expired tokens, which the enrolments rows answer on their own (tokens
	// are derived from the batch key and device ID): the record has done
	// its work, and without a sweep the table grows by one row per thousand
	// bundles forever.
	{"bulk_chunk", `DELETE FROM bulk_chunks
		WHERE (batch_key, chunk) IN (SELECT batch_key, chunk FROM bulk_chunks WHERE created_at <= $1 LIMIT $2)`,
		func(opt SweepOptions) time.Time { return opt.Now.Add(-opt.BulkChunkRetention) }},
	// A proof-of-control nonce is worth nothing once expired (claims.go
	// takes only live ones); each claimant keeps at most 16 per device, but
	// a claimant who never comes back would leave its rows forever.
	{"claim_nonce", `DELETE FROM claim_nonces
		WHERE nonce_hash IN (SELECT nonce_hash FROM claim_nonces WHERE expires_at <= $1 LIMIT $2)`, nil},
}

// Sweep runs one expiry sweep if this replica holds (or can take) the
// lease: chunk after chunk, each its own transaction that also renews the
// lease, until a chunk comes back short.
func (s *Store) Sweep(ctx context.Context, opt SweepOptions) (SweepResult, error) {
	if opt.Chunk <= 0 {
		opt.Chunk = 1000
	}
	if opt.LeaseTTL <= 0 {
		opt.LeaseTTL = 3 * time.Minute
	}
	if opt.MaxChunks <= 0 {
		opt.MaxChunks = 1000
	}
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	if opt.BulkChunkRetention <= 0 {
		opt.BulkChunkRetention = 48 * time.Hour
	}
	held, err := s.TakeLease(ctx, SweepLease, opt.Holder, opt.LeaseTTL, time.Now())
	if err != nil || !held {
		return SweepResult{}, err
	}
	res := SweepResult{Held: true}
	for _, k := range sweepKinds {
		for range opt.MaxChunks {
			if err := ctx.Err(); err != nil {
				return res, fmt.Errorf("sweep: %w", err)
			}
			n, err := s.sweepChunk(ctx, k, opt)
			if err != nil {
				return res, err
			}
			switch k.name {
			case "token":
				res.Tokens += n
			case "credential":
				res.Credentials += n
			case "claim_nonce":
				res.ClaimNonces += n
			default:
				res.BulkChunks += n
			}
			if n < opt.Chunk {
				break
			}
		}
	}
	// A replica of the release before migration 2 records certificates
	// without their issuer while a rolling upgrade runs; revoked, they
	// would be on no CRL. The backfill's work list is an index that is
	// empty once it is done, so looking every run costs one probe.
	if err := backfillIssuerKeyIDs(ctx, s); err != nil {
		return res, fmt.Errorf("sweep: %w", err)
	}
	return res, nil
}

// sweepChunk changes at most opt.Chunk rows of kind k in one serializable
// transaction that first renews the lease: if another replica took it, the
// transaction aborts before it changes anything (ErrLeaseLost).
func (s *Store) sweepChunk(ctx context.Context, k sweepKind, opt SweepOptions) (int, error) {
	var n int64
	due := opt.Now
	if k.due != nil {
		due = k.due(opt)
	}
	err := s.tx(ctx, "sweep_"+k.name, func(q querier) error {
		counts, err := q.execBatch(ctx, []stmt{
			{`UPDATE leases SET expires_at = $3 WHERE name = $1 AND holder = $2`,
				[]any{SweepLease, opt.Holder, time.Now().Add(opt.LeaseTTL).UTC()}, 1},
			{k.sql, []any{due.UTC(), opt.Chunk}, -1},
		})
		if err != nil {
			return err
		}
		if counts[0] != 1 {
			return ErrLeaseLost
		}
		n = counts[1]
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep %ss: %w", k.name, err)
	}
	return int(n), nil
}

// SweeperOptions run Sweep on a schedule.
type SweeperOptions struct {
	SweepOptions
	// Interval between sweeps (each replica tries; the lease holder sweeps).
	Interval time.Duration
	// Report receives every sweep's outcome (metrics and the log line).
	Report func(res SweepResult, d time.Duration, err error)
}

// RunSweeper sweeps every opt.Interval until ctx ends, then releases the
// lease if it held it. It returns when ctx is done.
func (s *Store) RunSweeper(ctx context.Context, opt SweeperOptions) {
	if opt.Interval <= 0 {
		return
	}
	if opt.LeaseTTL <= 0 {
		// Long enough that a holder renewing every interval keeps it
		// through a slow sweep; short enough that a dead holder is
		// replaced within a few intervals.
		opt.LeaseTTL = 3 * opt.Interval
	}
	held := false
	t := time.NewTicker(opt.Interval)
	defer t.Stop()
	for {
		o := opt.SweepOptions
		o.Now = time.Now()
		start := time.Now()
		res, err := s.Sweep(ctx, o)
		held = res.Held
		if opt.Report != nil && ctx.Err() == nil {
			opt.Report(res, time.Since(start), err)
		}
		select {
		case <-ctx.Done():
			if held {
				// A fresh context: ctx is already done.
				rctx, cancel := context.WithTimeout(context.Background(), s.opt.TxTimeout)
				_ = s.ReleaseLease(rctx, SweepLease, opt.Holder, time.Now())
				cancel()
			}
			return
		case <-t.C:
		}
	}
}
