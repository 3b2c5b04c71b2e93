package mef

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/clientauth"
	"github.com/credfactory/credfactory/forwardapi"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/maf"
	"github.com/credfactory/credfactory/ratelimit"
	"github.com/credfactory/credfactory/store"
)

// Config is the MEF's identity and policy.
type Config struct {
	// FQDN is the MEF's: the host part of KeIDs and KpsaIDs (TS-0003 §10.3.4).
	FQDN string
	// MAFFQDN is the MAF's: the host part of KmIDs and the MAF-ID in Km.
	MAFFQDN string
	// SPDomain is the host of issued AE-ID / CSE-ID URIs.
	SPDomain string
	// KeyLifetime bounds shared keys (TS-0003 §10.7: never beyond the
	// enrolment key's).
	KeyLifetime time.Duration
	// KeyMode is the key mode of shared-key requests that name none:
	// KeyModeExporter (TS-0003 §10.3; the default when empty) or
	// KeyModeMaster.
	KeyMode string
	// CertValidity bounds device certificates (0: the profile's default).
	CertValidity time.Duration
	// KeyPolicy is which subject keys a device CSR may have, on every
	// path; /csrattrs advertises exactly these. The zero value is
	// TS-0003's ECDSA P-256 only.
	KeyPolicy ca.KeyPolicy
	// NodeCA signs Node-ID certificates (nodeid.go); nil (an installation
	// without it) refuses them with node_ca_missing.
	NodeCA *ca.CA
	// ESTAnswerChain adds the issuing chain to EST enrolment answers, for
	// clients that do not fetch /cacerts; RFC 7030 §4.2.3 has the answer
	// hold only the issued certificate, the default.
	ESTAnswerChain bool
	// MaxForward is the most items in one forward batch.
	MaxForward int
	// Limits are the rate limits (limits.go); the zero value limits nothing.
	Limits ratelimit.Limits
	// RenewBefore, when positive, allows simplereenroll only within this
	// long before the certificate's expiry (0: any time it is current).
	RenewBefore time.Duration
	// RenewAfter, when positive, refuses simplereenroll for a certificate
	// younger than this (store.Renewal says why).
	RenewAfter time.Duration
	// OnRevoke, when set, runs after a renewal superseded (revoked) the
	// old certificate, so the CRL publisher regenerates at its next fetch
	// (castatus.Service.MarkStale), as for the MAF's and portal's
	// revocations.
	OnRevoke func()
}

// Observer receives the MEF's measurements (package metrics implements it).
type Observer interface {
	// ObserveEnrolment: path is est, json_cert, json_key, forward_cert or
	// forward_key; result is ok, replayed or an error code.
	ObserveEnrolment(path, result string, d time.Duration)
	ObserveForwardBatch(items int)
}

type nopObserver struct{}

func (nopObserver) ObserveEnrolment(string, string, time.Duration) {}
func (nopObserver) ObserveForwardBatch(int)                        {}

// MEF issues and records credentials.
type MEF struct {
	cfg    Config
	st     *store.Store
	reg    *maf.Registry
	ca     *ca.CA
	root   *x509.Certificate
	master kdf.Master
	peers  *clientauth.Verifier
	// obfPeers verifies forwarding OBFs' client certificates: issued by
	// the OBF CA (or, registered before it certified them, the issuing
	// CA), never through a chain the client brings.
	obfPeers *clientauth.Verifier
	// issueSlots bounds concurrent issuance on the forward path (2 per
	// core): a batch is a thousand items at once.
	issueSlots chan struct{}
	// forwardSlots bounds the forwarded items in flight across batches:
	// enough to fill the group commit (its batches hold up to 128), few
	// enough that memory does not grow with the batches waiting.
	forwardSlots chan struct{}
	obs          Observer
	now          func() time.Time
}

// forwardInFlight is how many forwarded items may be in flight at once.
const forwardInFlight = 512

// New builds the MEF. issuing signs device certificates, forwarded ones
// included; root and obfCA anchor forwarding OBFs' client certificates;
// peers verifies devices' TLS client certificates (re-enrolment).
func New(cfg Config, st *store.Store, reg *maf.Registry, issuing *ca.CA, root, obfCA *x509.Certificate, master kdf.Master, peers *clientauth.Verifier, obs Observer) *MEF {
	if cfg.KeyLifetime == 0 {
		cfg.KeyLifetime = 365 * 24 * time.Hour
	}
	if cfg.MaxForward == 0 {
		cfg.MaxForward = 1000
	}
	if cfg.KeyMode == "" {
		cfg.KeyMode = KeyModeExporter
	}
	if obs == nil {
		obs = nopObserver{}
	}
	m := &MEF{cfg: cfg, st: st, reg: reg, ca: issuing, root: root, master: master, peers: peers, obs: obs, now: time.Now,
		issueSlots: make(chan struct{}, 2*runtime.GOMAXPROCS(0)), forwardSlots: make(chan struct{}, forwardInFlight)}
	var inter []*x509.Certificate
	if obfCA != nil {
		inter = append(inter, obfCA)
	}
	if issuing != nil {
		inter = append(inter, issuing.Issuer())
	}
	var roots []*x509.Certificate
	if root != nil {
		roots = append(roots, root)
	}
	m.obfPeers = clientauth.New(roots, inter)
	return m
}

// Failure is a refusal with the status, the JSON code and the text an EST
// client shows.
type Failure = apierr.Error

func fail(status int, code, msg string) *Failure { return apierr.New(status, code, msg) }

var (
	errTokenUnknown   = fail(http.StatusForbidden, "token_unknown", "unknown enrolment token")
	errTokenRedeemed  = fail(http.StatusForbidden, "token_redeemed", "the enrolment token was already used")
	errTokenExpired   = fail(http.StatusForbidden, "token_expired", "the enrolment token has expired")
	errTokenCancelled = fail(http.StatusForbidden, "token_cancelled", "the enrolment token was cancelled (a newer one was issued, or the device was released)")
	errTokenMismatch  = fail(http.StatusForbidden, "token_mismatch", "the enrolment token is bound to another assigned ID, OBF, path or device certificate")
)

// tokenErr maps the registry's verdicts on a token to answers.
func tokenErr(err error) error {
	var f *Failure
	switch {
	case err == nil:
		return nil
	case errors.As(err, &f):
		return err
	case errors.Is(err, store.ErrTokenUnknown):
		return errTokenUnknown
	case errors.Is(err, store.ErrTokenRedeemed):
		return errTokenRedeemed
	case errors.Is(err, store.ErrTokenExpired):
		return errTokenExpired
	case errors.Is(err, store.ErrTokenCancelled):
		return errTokenCancelled
	case errors.Is(err, store.ErrTokenMismatch):
		e := *errTokenMismatch
		e.Message = strings.TrimPrefix(err.Error(), "redeem: ")
		return &e
	case errors.Is(err, store.ErrContention):
		// The database is up; the redemption lost its retries to concurrent
		// ones. Nothing was written: the same request may be sent again.
		return &Failure{Status: http.StatusConflict, Code: forwardapi.CodeRegistryContention, Message: "the request kept conflicting with concurrent changes; retry with the same token", RetryAfter: 1, Err: err}
	case errors.Is(err, store.ErrConflict):
		return &Failure{Status: http.StatusConflict, Code: "credential_exists", Message: "that credential is already recorded", Err: err}
	}
	return err
}

// precheck reads the token's enrolment and judges red against it before
// any HSM work, so an unknown, used or expired token costs one read and no
// signature. The redemption's transaction checks again: this is the cheap
// early refusal, not the guarantee. replay says red repeats the request
// that already redeemed the token.
func (m *MEF) precheck(ctx context.Context, red store.Redemption) (e store.Enrolment, replay bool, err error) {
	if e, err = m.st.Enrolment(ctx, red.TokenHash); err != nil {
		return e, false, tokenErr(err)
	}
	if replay, err = e.Check(red); err != nil {
		return e, false, tokenErr(err)
	}
	// The tenant's enrolment limit, before any HSM work. A replay is not
	// charged: it costs no signature, and a device whose answer was lost
	// must get its credential back.
	if !replay {
		if err := m.cfg.Limits.EnrolTenant.Check(e.Tenant); err != nil {
			return e, false, err
		}
	}
	return e, replay, nil
}

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// AssignedIDURI is the URI SAN of an assigned ID's certificate (TS-0003
// §10.1): the absolute form //<SP domain>/<ID>, for an SP-relative AE-ID
// ("S...") and a CSE-ID ("/...") alike.
func AssignedIDURI(spDomain, assignedID string) *url.URL {
	return forwardapi.AssignedIDURI(spDomain, assignedID)
}

// CertCredentialType is the Credential-ID type of an assigned ID's
// certificate (TS-0003 §10.4): 32 for a CSE-ID, 33 for an AE-ID.
func CertCredentialType(assignedID string) kdf.CredentialType {
	return kdf.CredentialType(forwardapi.CertCredentialType(assignedID))
}

func fingerprint(der []byte) []byte {
	h := sha256.Sum256(der)
	return h[:]
}

func hexs(b []byte) string { return hex.EncodeToString(b) }

func errorCode(err error) string {
	if err == nil {
		return "ok"
	}
	return apierr.As(err).Code
}

// background: a redemption that has begun is finished even if the client
// goes away, so a retry finds it (the answer was lost, not the credential).
func background(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }
