package mef

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/ca/catest"
	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/clientauth"
	"github.com/credfactory/credfactory/crlreason"
	"github.com/credfactory/credfactory/maf"
	"github.com/credfactory/credfactory/ratelimit"
	"github.com/credfactory/credfactory/store"
	"github.com/credfactory/credfactory/store/storetest"
)

// renewEnv is an MEF on a real registry (SQLite or PostgreSQL) with a
// software CA, and a clock the test moves.
type renewEnv struct {
	t   *testing.T
	st  *store.Store
	m   *MEF
	pki *catest.PKI
	now time.Time
	// revocations counts OnRevoke calls.
	revocations atomic.Int64
}

func newRenewEnv(t *testing.T, url string) *renewEnv {
	st, err := store.Open(context.Background(), url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := catest.New(t)
	env := &renewEnv{t: t, st: st, pki: p, now: time.Now()}
	clock := func() time.Time { return env.now }
	env.m = New(Config{FQDN: "mef.sp.example", SPDomain: "sp.example", CertValidity: 2 * time.Hour,
		OnRevoke: func() { env.revocations.Add(1) }},
		st, maf.New(st, nil, nil, nil), p.WithClock(t, clock), p.Root, nil, nil, nil, nil)
	env.m.now = func() time.Time { return env.now }
	return env
}

// enrol gives a new device a certificate through simpleenroll and returns
// it with its key.
func (e *renewEnv) enrol(device string) (*x509.Certificate, crypto.Signer) {
	e.t.Helper()
	token := device + "-token"
	h := sha256.Sum256([]byte(token))
	// Uploaded by its manufacturer, then claimed by the token's tenant.
	if _, err := e.st.UpsertDevices(context.Background(), "maker", []store.Device{{ID: device}}, e.now); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.CreateEnrolment(context.Background(), store.Enrolment{TokenHash: h[:], DeviceID: device, AssignedID: "S" + device,
		StakeholderID: "stk", Tenant: "tenant-1", Mode: store.ModeUntrusted, ExpiresAt: e.now.Add(time.Hour), CreatedAt: e.now}); err != nil {
		e.t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := client.CSR(key, "", token)
	if err != nil {
		e.t.Fatal(err)
	}
	res, err := e.m.EnrolCert(context.Background(), CertRequest{CSR: csr})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Certificate, key
}

func csrFor(t *testing.T, key crypto.Signer, cn string, ext ...pkix.Extension) []byte {
	t.Helper()
	der, err := client.CSR(key, cn, "", ext...)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newKey() crypto.Signer {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return k
}

func (e *renewEnv) credential(cert *x509.Certificate) store.Credential {
	e.t.Helper()
	c, err := e.st.Credential(context.Background(), store.ByCertSHA256, fingerprint(cert.Raw))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func wantCode(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var f *apierr.Error
	if !errors.As(err, &f) || f.Status != status || f.Code != code {
		t.Errorf("%s: %v, want %d %s", what, err, status, code)
	}
}

func TestReenrol(t *testing.T) {
	storetest.Each(t, func(t *testing.T, dbURL string) {
		e := newRenewEnv(t, dbURL)
		ctx := context.Background()
		cert1, key1 := e.enrol("dev1")

		// The current certificate renews, for the same assigned ID, with the
		// same key or a new one.
		key2 := newKey()
		renewCSR := csrFor(t, key2, "Sdev1")
		r2, err := e.m.Reenrol(ctx, cert1, renewCSR)
		if err != nil {
			t.Fatal(err)
		}
		cert2 := r2.Certificate
		if r2.Replayed || cert2.Subject.CommonName != "Sdev1" || len(cert2.URIs) != 1 || cert2.URIs[0].String() != "https://sp.example/Sdev1" ||
			cert2.SerialNumber.Cmp(cert1.SerialNumber) == 0 {
			t.Fatalf("renewed: CN %s URIs %v serial %x", cert2.Subject.CommonName, cert2.URIs, cert2.SerialNumber)
		}
		if old := e.credential(cert1); old.Status != store.StatusRevoked || *old.RevocationReason != crlreason.Superseded {
			t.Fatalf("the renewed certificate is %s, want superseded", old.Status)
		}
		if n := e.revocations.Load(); n != 1 {
			t.Errorf("OnRevoke ran %d times for one superseding renewal, want 1", n)
		}
		if c := e.credential(cert2); c.Status != store.StatusActive || c.AssignedID != "Sdev1" || c.DeviceID != "dev1" {
			t.Fatalf("new certificate's record: %+v", c)
		}

		// The answer was lost: the same request again gets the same
		// certificate, and nothing new is recorded.
		again, err := e.m.Reenrol(ctx, cert1, renewCSR)
		if err != nil || !again.Replayed || !again.Certificate.Equal(cert2) {
			t.Fatalf("retry: replayed=%v %v", again.Replayed, err)
		}
		if n := e.revocations.Load(); n != 1 {
			t.Errorf("OnRevoke ran again for a replay (%d)", n)
		}
		if all, _ := e.st.Credentials(ctx, "Sdev1"); len(all) != 2 {
			t.Fatalf("%d certificates recorded after a retry, want 2 (history kept, no duplicate)", len(all))
		}

		// An empty subject is fine too (the profile names the certificate).
		cert3r, err := e.m.Reenrol(ctx, cert2, csrFor(t, key1, ""))
		if err != nil {
			t.Fatal(err)
		}
		cert3 := cert3r.Certificate

		dnsSAN, _ := asn1.Marshal([]asn1.RawValue{{Tag: 2, Class: asn1.ClassContextSpecific, Bytes: []byte("evil.example")}})
		otherURI, _ := asn1.Marshal([]asn1.RawValue{{Tag: 6, Class: asn1.ClassContextSpecific, Bytes: []byte("https://sp.example/Sother")}})
		revokedCert, _ := e.enrol("dev-revoked")
		if _, err := e.st.Revoke(ctx, store.Revocation{ID: e.credential(revokedCert).ID, Reason: 1, At: e.now, Actor: "t", Tenant: "tenant-1"}); err != nil {
			t.Fatal(err)
		}
		expiring, _ := e.enrol("dev-expiring")
		stranger := e.pki.Leaf(t, ca.Request{Profile: ca.ProfileDevice, AssignedID: "Sdev1", URIs: []*url.URL{AssignedIDURI("sp.example", "Sdev1")}}).Leaf

		for _, tc := range []struct {
			name   string
			peer   *x509.Certificate
			csr    []byte
			at     time.Duration // from now
			before time.Duration // mef.renew_before
			status int
			code   string
		}{
			{"no client certificate", nil, csrFor(t, newKey(), ""), 0, 0, 401, "client_certificate_required"},
			{"certificate this SP never recorded", stranger, csrFor(t, newKey(), ""), 0, 0, 403, "unknown_certificate"},
			{"superseded, another key", cert1, csrFor(t, newKey(), ""), 0, 0, 403, "certificate_superseded"},
			{"superseded twice, the first renewal's key", cert1, renewCSR, 0, 0, 403, "certificate_superseded"},
			{"revoked", revokedCert, csrFor(t, newKey(), ""), 0, 0, 403, "certificate_revoked"},
			{"expired", expiring, csrFor(t, newKey(), ""), 3 * time.Hour, 0, 403, "certificate_expired"},
			{"outside the renewal window", cert3, csrFor(t, newKey(), ""), 0, time.Hour, 403, "renewal_too_early"},
			{"SAN for a DNS name", cert3, csrFor(t, newKey(), "", pkix.Extension{Id: oidSAN, Value: dnsSAN}), 0, 0, 400, "csr_san_mismatch"},
			{"SAN for another assigned ID", cert3, csrFor(t, newKey(), "", pkix.Extension{Id: oidSAN, Value: otherURI}), 0, 0, 400, "csr_san_mismatch"},
			{"subject of another assigned ID", cert3, csrFor(t, newKey(), "Sother"), 0, 0, 400, "csr_subject_mismatch"},
		} {
			saved := e.now
			e.now = e.now.Add(tc.at)
			e.m.cfg.RenewBefore = tc.before
			_, err := e.m.Reenrol(ctx, tc.peer, tc.csr)
			wantCode(t, tc.name, err, tc.status, tc.code)
			e.now, e.m.cfg.RenewBefore = saved, 0
		}
		// Refusals recorded nothing and left the current certificate current.
		if all, _ := e.st.Credentials(ctx, "Sdev1"); len(all) != 3 {
			t.Fatalf("%d certificates after refusals, want 3", len(all))
		}
		if c := e.credential(cert3); c.Status != store.StatusActive {
			t.Fatalf("the current certificate is %s after refused renewals", c.Status)
		}
		// Inside the renewal window it renews.
		e.m.cfg.RenewBefore = time.Hour
		e.now = cert3.NotAfter.Add(-30 * time.Minute)
		if _, err := e.m.Reenrol(ctx, cert3, csrFor(t, newKey(), "")); err != nil {
			t.Fatalf("inside the window: %v", err)
		}
	})
}

// TestReenrolCannotInflateTheCRL: each renewal supersedes a certificate,
// and so adds a CRL entry; back-to-back renewals by one device are held by
// mef.renew_after (a minimum age) and charged to the tenant's enrolment
// limit, while the retry of a renewal already done still answers.
func TestReenrolCannotInflateTheCRL(t *testing.T) {
	storetest.Each(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		for i, tc := range []struct {
			name       string
			renewAfter time.Duration
			limit      ratelimit.Rate // enrol_tenant
			at         time.Duration  // the new certificate's age at the second renewal
			status     int
			code       string
		}{
			{"a certificate younger than renew_after", time.Hour, ratelimit.Rate{}, 10 * time.Minute, 403, "renewal_too_early"},
			{"renew_after off", 0, ratelimit.Rate{}, 0, 0, ""},
			{"old enough", time.Hour, ratelimit.Rate{}, 61 * time.Minute, 0, ""},
			// The enrolment, then the first renewal, use the burst of 2.
			{"the tenant's enrolment limit", 0, ratelimit.Rate{PerSecond: 0.001, Burst: 2}, 0, 429, "rate_limited"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := newRenewEnv(t, dbURL)
				limits, err := ratelimit.Config{EnrolTenant: tc.limit}.Build(nil, func() time.Time { return e.now })
				if err != nil {
					t.Fatal(err)
				}
				e.m.cfg.Limits, e.m.cfg.RenewAfter = limits, tc.renewAfter
				device := "crl" + strconv.Itoa(i)
				cert1, _ := e.enrol(device)
				// Ages count from not-before (backdated a minute by the CA,
				// truncated to the second); the clock never goes back.
				at := func(t time.Time) {
					if t.After(e.now) {
						e.now = t
					}
				}
				at(cert1.NotBefore.Add(tc.renewAfter + time.Minute)) // the first renewal is allowed
				renewCSR := csrFor(t, newKey(), "")
				r2, err := e.m.Reenrol(ctx, cert1, renewCSR)
				if err != nil {
					t.Fatalf("first renewal: %v", err)
				}
				at(r2.Certificate.NotBefore.Add(tc.at + time.Minute))
				_, err = e.m.Reenrol(ctx, r2.Certificate, csrFor(t, newKey(), ""))
				if tc.code == "" {
					if err != nil {
						t.Fatalf("second renewal: %v", err)
					}
					return
				}
				wantCode(t, "second renewal", err, tc.status, tc.code)
				if f := (*apierr.Error)(nil); errors.As(err, &f) && tc.code == "renewal_too_early" &&
					!strings.Contains(f.Message, r2.Certificate.NotBefore.Add(tc.renewAfter).UTC().Format(time.RFC3339)) {
					t.Errorf("the refusal does not say when renewal opens: %s", f.Message)
				}
				// The retry of the first renewal still answers, uncharged and
				// whatever the window says.
				again, err := e.m.Reenrol(ctx, cert1, renewCSR)
				if err != nil || !again.Replayed || !again.Certificate.Equal(r2.Certificate) {
					t.Fatalf("retry of the first renewal: replayed=%v %v", again.Replayed, err)
				}
				if all, _ := e.st.Credentials(ctx, "S"+device); len(all) != 2 {
					t.Fatalf("%d certificates after a refused renewal, want 2", len(all))
				}
			})
		}
	})
}

// TestReenrolPeerRefusals: over a real TLS handshake on loopback (the
// server requests a client certificate without verifying it, as the
// server package does), a client certificate that fails verification is
// refused with what is wrong with it, and 401 is kept for a request
// without one.
func TestReenrolPeerRefusals(t *testing.T) {
	now := time.Now()
	p := catest.NewAt(t, now.Add(-4*time.Hour)) // valid from four hours ago
	m := New(Config{SPDomain: "sp.example"}, nil, nil, p.CA, p.Root, nil, nil,
		clientauth.New([]*x509.Certificate{p.Root}, []*x509.Certificate{p.Issuing}), nil)
	m.now = func() time.Time { return now }
	device := ca.Request{Profile: ca.ProfileDevice, AssignedID: "Sdev1", URIs: []*url.URL{AssignedIDURI("sp.example", "Sdev1")}}

	// Issued three hours ago for an hour, by the SP's issuing CA.
	expired := leafFrom(t, p.WithClock(t, func() time.Time { return now.Add(-3 * time.Hour) }), p.Issuing, device, time.Hour)
	// Issued by an OBF sub-CA under the same root (a forwarded certificate).
	obfKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	obfCert, err := ca.CreateIntermediate(p.Root, p.RootKey, &obfKey.PublicKey, pkix.Name{CommonName: "OBF sub-CA"}, 2*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	obfCA, err := ca.New(ca.Config{Issuer: obfCert, Signer: obfKey, Chain: []*x509.Certificate{obfCert, p.Root}})
	if err != nil {
		t.Fatal(err)
	}
	forwarded := leafFrom(t, obfCA, obfCert, device, time.Hour)
	current := p.Leaf(t, device)

	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		status int
		code   string
	}{
		{"no client certificate", nil, 401, "client_certificate_required"},
		{"expired", &expired, 403, "certificate_expired"},
		{"forwarded by an OBS", &forwarded, 403, "not_renewable"},
		{"current, from the issuing CA", &current, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := handshake(t, p, tc.cert)
			peer, err := m.renewalPeer(&state)
			if tc.code == "" {
				if err != nil || !peer.Equal(tc.cert.Leaf) {
					t.Fatalf("a current certificate: %v", err)
				}
				return
			}
			wantCode(t, tc.name, err, tc.status, tc.code)
		})
	}
}

// leafFrom issues req by c (whose certificate is issuer) for a fresh key.
func leafFrom(t *testing.T, c *ca.CA, issuer *x509.Certificate, req ca.Request, validity time.Duration) tls.Certificate {
	t.Helper()
	key := newKey()
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	req.CSR, req.Validity = csr, validity
	issued, err := c.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{issued.DER, issuer.Raw}, PrivateKey: key, Leaf: issued.Certificate}
}

// handshake runs a TLS handshake on loopback presenting cert (nil: none)
// and returns the server's view of it.
func handshake(t *testing.T, p *catest.PKI, cert *tls.Certificate) tls.ConnectionState {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		srv := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{p.ServerCert(t)}, ClientAuth: tls.RequestClientCert})
		err = srv.Handshake()
		if err == nil {
			_, err = srv.Write([]byte{1}) // the client waits for this: the server saw its certificate
		}
		done <- result{srv.ConnectionState(), err}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(p.Root)
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.state
}
