package hsm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credfactory/credfactory/reqid"
	"github.com/miekg/pkcs11"
)

// Observer receives what the pool measures; the server turns it into
// Prometheus metrics. hsm does not import Prometheus so that the OBS and the
// tests can use it without a registry.
type Observer interface {
	// ObserveOp is called once per operation with its latency, pool wait
	// and recovery retries included.
	ObserveOp(op string, d time.Duration, err error)
	// ObserveWait is called with how long a caller waited for a session.
	ObserveWait(d time.Duration)
	// ObserveRecovery is called when a broken session is evicted (kind is
	// ErrorKind of the error that broke it) or the module re-initialised.
	ObserveRecovery(kind string)
}

type nopObserver struct{}

func (nopObserver) ObserveOp(string, time.Duration, error) {}
func (nopObserver) ObserveWait(time.Duration)              {}
func (nopObserver) ObserveRecovery(string)                 {}

// Stats is a snapshot of the pool, for gauges.
type Stats struct {
	Max, InUse, Waiting, Idle int
}

// session is a pooled session handle and the epoch it was opened in.
type session struct {
	h     pkcs11.SessionHandle
	epoch uint64
}

// Module is an open PKCS#11 module, logged in to one token, with a bounded
// session pool. It is safe for concurrent use.
type Module struct {
	cfg Config
	pin string
	obs Observer
	lib *library

	// mu is held for reading by every operation and for writing only while
	// the module is re-initialised after the token went away, because
	// C_Finalize under a running call is undefined behaviour.
	mu         sync.RWMutex
	slot       uint
	lastReinit time.Time // the last re-initialisation attempt, under mu
	reinitGap  time.Duration

	// epoch changes whenever sessions or object handles may be stale;
	// idle sessions and cached key handles from an older epoch are
	// dropped when next touched.
	epoch atomic.Uint64

	sem     chan struct{}
	idleMu  sync.Mutex
	idle    []session
	inUse   atomic.Int64
	waiting atomic.Int64

	loginRefused atomic.Bool
	closed       atomic.Bool

	keysMu  sync.Mutex
	signers map[string]*Signer
}

// library is one loaded PKCS#11 module. C_Initialize and C_Finalize are
// process-wide, and a Module re-initialises its library to recover from a
// lost token, so a library belongs to one Module at a time: a second Open of
// the same path fails instead of having its sessions finalised under it.
type library struct {
	path string
	ctx  *pkcs11.Ctx
}

var (
	librariesMu sync.Mutex
	libraries   = map[string]bool{}
)

func openLibrary(path string) (*library, error) {
	librariesMu.Lock()
	defer librariesMu.Unlock()
	if libraries[path] {
		return nil, fmt.Errorf("PKCS#11 module %s is already open in this process: use one hsm.Module", path)
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("load PKCS#11 module %s: not a loadable PKCS#11 library", path)
	}
	if err := ctx.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		ctx.Destroy()
		return nil, fmt.Errorf("initialise PKCS#11 module %s: %w", path, err)
	}
	libraries[path] = true
	return &library{path: path, ctx: ctx}, nil
}

func (l *library) release() {
	librariesMu.Lock()
	defer librariesMu.Unlock()
	_ = l.ctx.Finalize()
	l.ctx.Destroy()
	delete(libraries, l.path)
}

// Open loads the module, finds the token, and opens the pool's sessions one
// at a time: the first one logs in, so a wrong PIN costs one failed attempt
// and never locks the token by retrying.
func Open(cfg Config, obs Observer) (*Module, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hsm config: %w", err)
	}
	pin, err := cfg.PIN()
	if err != nil {
		return nil, err
	}
	if obs == nil {
		obs = nopObserver{}
	}
	if err := cfg.exportSoftHSMConf(); err != nil {
		return nil, err
	}
	lib, err := openLibrary(cfg.Module)
	if err != nil {
		return nil, err
	}
	m := &Module{
		cfg:       cfg,
		pin:       pin,
		obs:       obs,
		lib:       lib,
		sem:       make(chan struct{}, cfg.MaxSessions),
		signers:   map[string]*Signer{},
		reinitGap: reinitGap,
	}
	if m.slot, err = m.findSlot(); err != nil {
		lib.release()
		return nil, err
	}
	for i := 0; i < cfg.MaxSessions; i++ {
		s, err := m.openSession()
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("open HSM session %d of %d: %w", i+1, cfg.MaxSessions, err)
		}
		m.idle = append(m.idle, s)
	}
	return m, nil
}

// Close closes the pool's sessions and finalises the library (a process
// opens each library through one Module). Operations after Close fail with
// ErrClosed.
func (m *Module) Close() {
	if m.closed.Swap(true) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.idleMu.Lock()
	for _, s := range m.idle {
		_ = m.lib.ctx.CloseSession(s.h)
	}
	m.idle = nil
	m.idleMu.Unlock()
	m.lib.release()
}

// Stats reports the pool's size and use.
func (m *Module) Stats() Stats {
	m.idleMu.Lock()
	idle := len(m.idle)
	m.idleMu.Unlock()
	return Stats{Max: m.cfg.MaxSessions, InUse: int(m.inUse.Load()), Waiting: int(m.waiting.Load()), Idle: idle}
}

// Ping checks that a logged-in session can be had and that the token
// answers, for /readyz. The token is asked too (C_GetTokenInfo) because a
// session alone can outlive its token: SoftHSM2 answers session calls, and
// signs with session copies of keys, from memory after its token storage
// is gone. A token that fails is re-initialised by the pool (see
// errTokenLost), so the probe that finds the outage also starts recovery.
func (m *Module) Ping(ctx context.Context) error {
	return m.do(ctx, "ping", func(s session) error {
		info, err := m.lib.ctx.GetSessionInfo(s.h)
		if err != nil {
			return err
		}
		if info.State != pkcs11.CKS_RW_USER_FUNCTIONS && info.State != pkcs11.CKS_RO_USER_FUNCTIONS {
			return pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)
		}
		if _, err := m.lib.ctx.GetTokenInfo(m.slot); err != nil {
			if tokenGone(err) {
				return err
			}
			return fmt.Errorf("%w: token info: %w", errTokenLost, err)
		}
		return nil
	})
}

func (m *Module) findSlot() (uint, error) {
	slots, err := m.lib.ctx.GetSlotList(true)
	if err != nil {
		return 0, fmt.Errorf("%w: list slots: %w", ErrUnavailable, err)
	}
	var found []uint
	for _, slot := range slots {
		ti, err := m.lib.ctx.GetTokenInfo(slot)
		if err != nil {
			continue
		}
		if (m.cfg.TokenLabel != "" && strings.TrimRight(ti.Label, " \x00") == m.cfg.TokenLabel) ||
			(m.cfg.TokenSerial != "" && strings.TrimRight(ti.SerialNumber, " \x00") == m.cfg.TokenSerial) {
			found = append(found, slot)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("%w: no token %s in %s", ErrUnavailable, m.tokenName(), m.cfg.Module)
	case 1:
		return found[0], nil
	}
	return 0, fmt.Errorf("%d tokens match %s: select by token_serial", len(found), m.tokenName())
}

func (m *Module) tokenName() string {
	if m.cfg.TokenLabel != "" {
		return fmt.Sprintf("labelled %q", m.cfg.TokenLabel)
	}
	return fmt.Sprintf("with serial %q", m.cfg.TokenSerial)
}

// openSession opens a read-write session and logs in unless the application
// already is (PKCS#11 login state is shared by all sessions of a process).
func (m *Module) openSession() (session, error) {
	epoch := m.epoch.Load()
	h, err := m.lib.ctx.OpenSession(m.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return session{}, fmt.Errorf("open session: %w", err)
	}
	info, err := m.lib.ctx.GetSessionInfo(h)
	if err != nil {
		_ = m.lib.ctx.CloseSession(h)
		return session{}, fmt.Errorf("session info: %w", err)
	}
	if info.State == pkcs11.CKS_RO_PUBLIC_SESSION || info.State == pkcs11.CKS_RW_PUBLIC_SESSION {
		if err := m.login(h); err != nil {
			_ = m.lib.ctx.CloseSession(h)
			return session{}, err
		}
	}
	return session{h: h, epoch: epoch}, nil
}

func (m *Module) login(h pkcs11.SessionHandle) error {
	if m.loginRefused.Load() {
		return fmt.Errorf("%w: the PIN was refused before; fix it and restart", ErrLogin)
	}
	err := m.lib.ctx.Login(h, pkcs11.CKU_USER, m.pin)
	var p11 pkcs11.Error
	switch {
	case err == nil, errors.As(err, &p11) && p11 == pkcs11.CKR_USER_ALREADY_LOGGED_IN:
		return nil
	case errors.As(err, &p11) && (p11 == pkcs11.CKR_PIN_INCORRECT || p11 == pkcs11.CKR_PIN_LOCKED ||
		p11 == pkcs11.CKR_PIN_EXPIRED || p11 == pkcs11.CKR_PIN_INVALID || p11 == pkcs11.CKR_PIN_LEN_RANGE):
		m.loginRefused.Store(true)
		return fmt.Errorf("%w: %w", ErrLogin, err)
	}
	return fmt.Errorf("login: %w", err)
}

// getSession takes an idle session of the current epoch, closing stale ones
// on the way, or opens a new one. The semaphore, not this, bounds the count.
func (m *Module) getSession() (session, error) {
	epoch := m.epoch.Load()
	m.idleMu.Lock()
	for len(m.idle) > 0 {
		s := m.idle[len(m.idle)-1]
		m.idle = m.idle[:len(m.idle)-1]
		if s.epoch == epoch {
			m.idleMu.Unlock()
			return s, nil
		}
		_ = m.lib.ctx.CloseSession(s.h) // stale: it may be dead or logged out
	}
	m.idleMu.Unlock()
	return m.openSession()
}

func (m *Module) putSession(s session) {
	m.idleMu.Lock()
	m.idle = append(m.idle, s)
	m.idleMu.Unlock()
}

// do runs fn on a pooled session. The wait is bounded by ctx and by
// Config.WaitTimeout. An error that means the session or login is gone evicts
// the session, moves to a new epoch (so key handles are looked up again) and
// retries; an error that means the token is gone re-initialises the module
// first. Every operation fn runs is safe to repeat.
func (m *Module) do(ctx context.Context, op string, fn func(session) error) error {
	start := time.Now()
	err := m.doRetry(ctx, fn, start)
	m.obs.ObserveOp(op, time.Since(start), err)
	return err
}

func (m *Module) doRetry(ctx context.Context, fn func(session) error, start time.Time) error {
	if m.closed.Load() {
		return ErrClosed
	}
	if m.cfg.WaitTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(reqid.Detached(ctx), m.cfg.WaitTimeout)
		defer cancel()
	}
	m.waiting.Add(1)
	select {
	case m.sem <- struct{}{}:
		m.waiting.Add(-1)
	case <-ctx.Done():
		m.waiting.Add(-1)
		m.obs.ObserveWait(time.Since(start))
		return fmt.Errorf("%w (%d sessions busy): %w", ErrPoolTimeout, m.cfg.MaxSessions, ctx.Err())
	}
	m.obs.ObserveWait(time.Since(start))
	m.inUse.Add(1)
	defer func() {
		m.inUse.Add(-1)
		<-m.sem
	}()

	const attempts = 3
	var err error
	for i := 0; i < attempts; i++ {
		if m.closed.Load() {
			return ErrClosed
		}
		epoch := m.epoch.Load()
		err = m.attempt(fn)
		if err == nil || !(brokenSession(err) || tokenGone(err)) {
			return err
		}
		m.obs.ObserveRecovery(ErrorKind(err))
		if tokenGone(err) {
			if rerr := m.reinit(epoch); rerr != nil {
				return rerr
			}
		}
	}
	return fmt.Errorf("%w: still failing after %d recoveries: %w", ErrUnavailable, attempts, err)
}

func (m *Module) attempt(fn func(session) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	// Checked under the lock: Close holds it for writing while it finalises
	// the library, and a call that waited behind it must not touch the
	// finalised module.
	if m.closed.Load() {
		return ErrClosed
	}
	s, err := m.getSession()
	if err != nil {
		err = m.probeToken(err)
		if brokenSession(err) && !tokenGone(err) {
			m.newEpoch(m.epoch.Load())
		}
		return err
	}
	err = fn(s)
	if err != nil && !brokenSession(err) && !tokenGone(err) {
		err = m.probeToken(m.probe(s, err))
	}
	if brokenSession(err) {
		_ = m.lib.ctx.CloseSession(s.h)
		// A lost token is re-initialised by reinit, which moves the epoch
		// itself; bumping it here would make reinit think it was done.
		if !tokenGone(err) {
			m.newEpoch(s.epoch)
		}
		return err
	}
	m.putSession(s)
	return err
}

// newEpoch moves on from epoch (if no one else has) and closes the idle
// sessions of older epochs at once: each may hold session copies of keys,
// and a live stale session would otherwise keep them until it is popped.
func (m *Module) newEpoch(from uint64) {
	if !m.epoch.CompareAndSwap(from, from+1) {
		return
	}
	m.idleMu.Lock()
	stale := m.idle
	m.idle = nil
	m.idleMu.Unlock()
	for _, s := range stale {
		_ = m.lib.ctx.CloseSession(s.h)
	}
}

// reinitGap is the least time between two re-initialisations (reinit).
const reinitGap = time.Second

// reinit finalises and re-initialises the library and finds the token again
// (SoftHSM renumbers slots), unless another caller already did so since
// seenEpoch. Re-initialisations are at least reinitGap apart, successful or
// not: a missing token costs a fast ErrUnavailable rather than a storm of
// C_Initialize calls, and so does a network HSM whose C_GetTokenInfo times
// out under load right after a successful re-initialisation (each one
// drops every session and costs logins, which would deepen the overload).
// Callers within the gap get ErrUnavailable (503, Retry-After) rather than
// waiting for it: a waiting caller would hold its pool slot and the
// request for up to the whole gap, and the client's retry is as good.
func (m *Module) reinit(seenEpoch uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.epoch.Load() != seenEpoch {
		return nil
	}
	if since := time.Since(m.lastReinit); since < m.reinitGap {
		return fmt.Errorf("%w: token lost again %v after the last re-initialisation (at most one per %v)",
			ErrUnavailable, since.Round(time.Millisecond), m.reinitGap)
	}
	m.lastReinit = time.Now()
	m.obs.ObserveRecovery("reinit")
	m.idleMu.Lock()
	m.idle = nil // C_Finalize closes them all
	m.idleMu.Unlock()
	_ = m.lib.ctx.Finalize()
	if err := m.lib.ctx.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		return fmt.Errorf("%w: re-initialise module: %w", ErrUnavailable, err)
	}
	slot, err := m.findSlot()
	if err != nil {
		return err
	}
	m.slot = slot
	m.epoch.Add(1)
	return nil
}

// probeToken asks the token whether it still answers after an operation
// failed in a way that the session does not explain: a PKCS#11 error other
// than a session or token code, or a key that is no longer found. If
// C_GetTokenInfo fails too, the token is lost (errTokenLost) and the pool
// re-initialises the module; SoftHSM2 has no other way to say that its
// token storage went away. Paid only on failures. Called under m.mu.RLock.
func (m *Module) probeToken(opErr error) error {
	var p11 pkcs11.Error
	if brokenSession(opErr) || tokenGone(opErr) || !(errors.As(opErr, &p11) || errors.Is(opErr, ErrKeyNotFound)) {
		return opErr
	}
	if _, err := m.lib.ctx.GetTokenInfo(m.slot); err != nil {
		return fmt.Errorf("%w: token info: %v (after: %w)", errTokenLost, err, opErr)
	}
	return opErr
}

// probe asks whether an operation failed because its session broke under
// it. A session closed or logged out by another application while a call was
// in flight makes SoftHSM answer CKR_GENERAL_ERROR rather than a session
// error; asking the session afterwards tells the two apart, at a cost paid
// only on failures.
func (m *Module) probe(s session, opErr error) error {
	var p11 pkcs11.Error
	if !errors.As(opErr, &p11) {
		return opErr
	}
	info, err := m.lib.ctx.GetSessionInfo(s.h)
	switch {
	case err != nil && brokenSession(err):
		return fmt.Errorf("%w (session found broken after: %v)", err, opErr)
	case err == nil && info.State != pkcs11.CKS_RW_USER_FUNCTIONS && info.State != pkcs11.CKS_RO_USER_FUNCTIONS:
		return fmt.Errorf("%w (session found logged out after: %v)", pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN), opErr)
	}
	return opErr
}
