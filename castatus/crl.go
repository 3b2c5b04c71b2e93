package castatus

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/ratelimit"
	"github.com/credfactory/credfactory/store"
)

// Registry is what the status services read (package store implements it).
type Registry interface {
	RevokedCertificates(ctx context.Context, issuerKeyID string, unexpiredAt time.Time, after string, limit int) ([]store.RevokedCertificate, error)
	RevocationWatermark(ctx context.Context, issuerKeyID string, since time.Time) (store.Watermark, error)
	CertificateStatusBySerial(ctx context.Context, serial string) (store.CertificateStatus, error)
	NextCRLNumber(ctx context.Context, issuerKeyID string, atLeast int64) (int64, error)
}

// Observer receives what the metrics need. Status and result values are a
// fixed vocabulary.
type Observer interface {
	// ObserveCRL reports one CRL generation: its duration, its entries
	// and its error (nil on success).
	ObserveCRL(d time.Duration, entries int, err error)
	// ObserveOCSP counts one OCSP answer: good, revoked, unknown,
	// unauthorized, malformed, try_later or internal_error.
	ObserveOCSP(status string)
}

type nopObserver struct{}

func (nopObserver) ObserveCRL(time.Duration, int, error) {}
func (nopObserver) ObserveOCSP(string)                   {}

// Config tunes a Service. Zero values take the defaults.
type Config struct {
	// Name is the {issuer} of the CA's CRL URL (default
	// ca.IssuingCRLName); it must be what the CA writes into the
	// certificates it issues.
	Name string
	// Interval is how often the CRL is regenerated (default 1h), and the
	// longest a cache may keep it.
	Interval time.Duration
	// Validity is nextUpdate - thisUpdate (default 24h). It must exceed
	// Interval, so relying parties keep a valid CRL through a failed or
	// late regeneration.
	Validity time.Duration
	// PageSize is how many revoked serials one registry read returns
	// (default 2000).
	PageSize int
	// StaleCheck is how often, at most, a CRL fetch asks the registry
	// whether another replica revoked something (default 1s).
	StaleCheck time.Duration
	// Grace bounds how long a revoking transaction may run plus the clock
	// skew between replicas (default 10m): revocations stamped up to Grace
	// before a generation began and committed after it still make that CRL
	// stale (store.RevocationWatermark).
	Grace time.Duration
	// Limits, when set, holds each source to limits.status_source on the
	// CRL and OCSP routes: they are unauthenticated, and an OCSP answer
	// costs a registry read and an HSM signature.
	Limits *ratelimit.Limits
	// Signers caps concurrent OCSP signatures (default 1), so a flood of
	// OCSP requests cannot take the HSM sessions enrolment needs; a request
	// that finds them all busy for SignerWait (default 50ms) is answered
	// tryLater.
	Signers    int
	SignerWait time.Duration
	Observer   Observer
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Service is the issuing CA's CRL publisher and OCSP responder. It is safe
// for concurrent use.
type Service struct {
	ca          *ca.CA
	reg         Registry
	cfg         Config
	issuerKeyID string

	// signers holds one token per OCSP signature in flight.
	signers chan struct{}

	cur   atomic.Pointer[ca.CRL]
	stale atomic.Bool
	// lastCheck is when the registry watermark was last read (Unix ns).
	lastCheck atomic.Int64
	// failedAt is when the last generation failed (Unix ns, 0 after a
	// success); fetches do not retry for backoff (ns) after it.
	failedAt atomic.Int64
	backoff  atomic.Int64
	lastErr  atomic.Pointer[error]

	// mu serialises generations, so concurrent fetches of a stale CRL
	// cause one, not one each.
	mu        sync.Mutex
	watermark store.Watermark // registry watermark the current CRL was built at...
	wmSince   time.Time       // ...counting revocations stamped after this
	last      time.Time       // thisUpdate of the last generation, for monotonicity
}

// New builds the status services of authority over reg. The CRL is built
// on first use (or by Run).
func New(authority *ca.CA, reg Registry, cfg Config) (*Service, error) {
	if cfg.Name == "" {
		cfg.Name = ca.IssuingCRLName
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Hour
	}
	if cfg.Validity == 0 {
		cfg.Validity = 24 * time.Hour
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = 2000
	}
	if cfg.StaleCheck == 0 {
		cfg.StaleCheck = time.Second
	}
	if cfg.Grace == 0 {
		cfg.Grace = 10 * time.Minute
	}
	if cfg.Signers <= 0 {
		cfg.Signers = 1
	}
	if cfg.SignerWait <= 0 {
		cfg.SignerWait = 50 * time.Millisecond
	}
	if cfg.Observer == nil {
		cfg.Observer = nopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Interval < 0 || cfg.Validity <= cfg.Interval {
		return nil, fmt.Errorf("castatus: CRL validity %v must exceed the regeneration interval %v", cfg.Validity, cfg.Interval)
	}
	if len(authority.Issuer().SubjectKeyId) == 0 {
		return nil, errors.New("castatus: the issuer certificate has no subject key ID")
	}
	return &Service{ca: authority, reg: reg, cfg: cfg, issuerKeyID: hex.EncodeToString(authority.Issuer().SubjectKeyId),
		signers: make(chan struct{}, cfg.Signers)}, nil
}

// MarkStale says a certificate was revoked: the next fetch regenerates the
// CRL. It costs one atomic store, so revocation paths call it freely.
func (s *Service) MarkStale() { s.stale.Store(true) }

// CRL returns a current CRL, regenerating it when none exists, it is older
// than Interval, this process revoked something since (MarkStale), or the
// registry's revocation watermark moved past it. If regeneration fails
// while the previous CRL is still valid (before its nextUpdate), the
// previous one is served and the failure logged: a registry outage must not
// take the CRL away from relying parties.
//
// A fetch never waits for a generation while the current CRL is valid: if
// one is in flight (Run's or another fetch's) it gets the current CRL at
// once. After a failed generation, fetches serve the current CRL without
// retrying for a backoff (StaleCheck, doubling up to a minute), so N
// fetches during an outage are not N full scans; Run retries on its own
// schedule meanwhile.
func (s *Service) CRL(ctx context.Context) (*ca.CRL, error) {
	crl, _, err := s.crl(ctx)
	return crl, err
}

// crl is CRL that also says whether the CRL served is known to be out of
// date (a revocation is not on it yet), which shortens what caches may keep.
func (s *Service) crl(ctx context.Context) (*ca.CRL, bool, error) {
	now := s.cfg.Now()
	cur := s.cur.Load()
	if cur != nil && !s.stale.Load() && now.Before(cur.ThisUpdate.Add(s.cfg.Interval)) &&
		now.UnixNano()-s.lastCheck.Load() < int64(s.cfg.StaleCheck) {
		return cur, false, nil
	}
	valid := cur != nil && now.Before(cur.NextUpdate)
	if s.backingOff(now) {
		if valid {
			return cur, true, nil
		}
		if err := s.lastErr.Load(); err != nil {
			return nil, true, *err
		}
	}
	if valid {
		if !s.mu.TryLock() {
			// A generation is in flight: what it builds will be served
			// by later fetches; this one need not wait for it.
			return cur, true, nil
		}
	} else {
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	cur = s.cur.Load()
	regenerate := cur == nil || s.stale.Load() || !now.Before(cur.ThisUpdate.Add(s.cfg.Interval))
	if !regenerate && now.UnixNano()-s.lastCheck.Load() >= int64(s.cfg.StaleCheck) {
		wm, err := s.reg.RevocationWatermark(ctx, s.issuerKeyID, s.wmSince)
		s.lastCheck.Store(now.UnixNano())
		if err != nil {
			s.cfg.Logger.Warn("CRL staleness check failed; serving the current CRL", "err", err.Error())
			return cur, false, nil
		}
		regenerate = wm != s.watermark
	}
	if !regenerate {
		return cur, false, nil
	}
	fresh, err := s.generateLocked(ctx)
	if err != nil {
		if cur != nil && now.Before(cur.NextUpdate) {
			s.cfg.Logger.Error("CRL regeneration failed; serving the previous CRL", "err", err.Error(),
				"this_update", cur.ThisUpdate, "next_update", cur.NextUpdate, "retry_in", time.Duration(s.backoff.Load()).String())
			return cur, true, nil
		}
		return nil, true, err
	}
	return fresh, false, nil
}

// backingOff says whether a generation failed less than the current backoff
// ago.
func (s *Service) backingOff(now time.Time) bool {
	at := s.failedAt.Load()
	return at != 0 && now.UnixNano()-at < s.backoff.Load()
}

// failed records a failed generation and doubles the backoff (from
// StaleCheck, up to a minute).
func (s *Service) failed(now time.Time, err error) {
	b := time.Duration(s.backoff.Load())
	switch {
	case b == 0:
		b = s.cfg.StaleCheck
	case b < time.Minute:
		b = min(2*b, time.Minute)
	}
	s.backoff.Store(int64(b))
	s.failedAt.Store(now.UnixNano())
	s.lastErr.Store(&err)
}

// Generate builds and signs a new CRL now and makes it current.
func (s *Service) Generate(ctx context.Context) (*ca.CRL, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.generateLocked(ctx)
}

func (s *Service) generateLocked(ctx context.Context) (crl *ca.CRL, err error) {
	start := time.Now()
	entries := 0
	defer func() {
		s.cfg.Observer.ObserveCRL(time.Since(start), entries, err)
		if err != nil {
			s.failed(s.cfg.Now(), err)
		} else {
			s.failedAt.Store(0)
			s.backoff.Store(0)
		}
	}()

	// Cleared before reading, so a revocation that lands while we page
	// marks the result stale again instead of being lost.
	s.stale.Store(false)
	thisUpdate := s.cfg.Now()
	if !thisUpdate.After(s.last) {
		// The CRL number is derived from thisUpdate: keep it increasing
		// even if the clock steps back or two generations share an instant.
		thisUpdate = s.last.Add(time.Nanosecond)
	}
	// The watermark is read before the serials: whatever is revoked after
	// it moves the watermark and triggers the next regeneration, even if
	// its revoked_at is earlier than revocations already seen.
	since := thisUpdate.Add(-s.cfg.Grace)
	wm, err := s.reg.RevocationWatermark(ctx, s.issuerKeyID, since)
	if err != nil {
		s.stale.Store(true)
		return nil, fmt.Errorf("generate CRL: %w", err)
	}
	// RFC 5280 §3.3: an entry stays until it has appeared on one regularly
	// scheduled CRL issued beyond the certificate's validity. Keeping it
	// for one Validity after notAfter does that even when generations fail
	// or another replica publishes on its own schedule.
	list, err := s.collect(ctx, thisUpdate.Add(-s.cfg.Validity))
	if err != nil {
		s.stale.Store(true)
		return nil, fmt.Errorf("generate CRL: %w", err)
	}
	entries = len(list)
	// The number is reserved in the registry, after the slow part and
	// right before signing: the clock's number unless a CRL with that one
	// or a higher one is out already (a replica's clock is ahead, or ours
	// stepped back), since relying parties keep the highest.
	n, err := s.reg.NextCRLNumber(ctx, s.issuerKeyID, ca.CRLNumber(thisUpdate).Int64())
	if err != nil {
		s.stale.Store(true)
		return nil, fmt.Errorf("generate CRL: %w", err)
	}
	crl, err = s.ca.SignCRL(ctx, big.NewInt(n), thisUpdate, thisUpdate.Add(s.cfg.Validity), list)
	if err != nil {
		s.stale.Store(true)
		return nil, fmt.Errorf("generate CRL: %w", err)
	}
	s.last, s.watermark, s.wmSince = thisUpdate, wm, since
	s.lastCheck.Store(thisUpdate.UnixNano())
	s.cur.Store(crl)
	return crl, nil
}

// collect pages through the issuer's revoked certificates, one short read
// per page (store.RevokedCertificates): the registry is never held for the
// length of a generation.
func (s *Service) collect(ctx context.Context, at time.Time) ([]x509.RevocationListEntry, error) {
	var out []x509.RevocationListEntry
	after := ""
	for {
		page, err := s.reg.RevokedCertificates(ctx, s.issuerKeyID, at, after, s.cfg.PageSize)
		if err != nil {
			return nil, err
		}
		for _, rc := range page {
			serial, err := ca.ParseSerialHex(rc.Serial)
			if err != nil {
				// One corrupt row must not withhold every other revocation.
				s.cfg.Logger.Error("revoked certificate with an unreadable serial left off the CRL", "serial", rc.Serial)
				continue
			}
			out = append(out, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: rc.RevokedAt,
				ReasonCode: crlreason.Normalize(rc.Reason)})
		}
		if len(page) < s.cfg.PageSize {
			return out, nil
		}
		after = page[len(page)-1].Serial
	}
}

// Run regenerates the CRL a little before each current CRL's
// ThisUpdate + Interval, until ctx ends, so fetches rarely wait for a
// generation and a stale-but-valid CRL never lingers. It waits from the
// current CRL, whoever built it: when fetches have just regenerated it (a
// revocation), Run does not build another one back to back. A failed
// generation is retried after a minute (or Interval, if shorter).
func (s *Service) Run(ctx context.Context) {
	retry := min(time.Minute, s.cfg.Interval)
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if due := s.nextScheduled(); due > 0 {
			wait = due // a fetch regenerated it meanwhile
			continue
		}
		if _, err := s.Generate(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.cfg.Logger.Error("scheduled CRL generation failed", "err", err.Error(), "retry_in", retry.String())
			wait = retry
			continue
		}
		wait = s.nextScheduled()
	}
}

// nextScheduled is how long until the current CRL is due for its scheduled
// regeneration: ThisUpdate + Interval less a margin (a tenth of Interval,
// at most a minute), so Run replaces it before fetches find it expired and
// each start a generation of their own.
func (s *Service) nextScheduled() time.Duration {
	cur := s.cur.Load()
	if cur == nil {
		return 0
	}
	margin := min(s.cfg.Interval/10, time.Minute)
	return cur.ThisUpdate.Add(s.cfg.Interval - margin).Sub(s.cfg.Now())
}
