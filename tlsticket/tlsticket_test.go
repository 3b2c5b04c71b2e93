package tlsticket

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/credfactory/credfactory/hsm/softhsm/softhsmtest"
)

// TestResumptionAcrossReplicas: a session made with one replica resumes on
// another whose HSM holds the same key, also across one rotation; never on
// a server with another key, nor two periods later.
func TestResumptionAcrossReplicas(t *testing.T) {
	other := otherKey(t)
	cert, pool := selfSigned(t)
	now := time.Now()
	for _, tc := range []struct {
		name    string
		version uint16
		second  Deriver
		at      time.Time
		resume  bool
	}{
		{"same HSM key, TLS 1.3", tls.VersionTLS13, master, now, true},
		{"same HSM key, TLS 1.2", tls.VersionTLS12, master, now, true},
		{"same HSM key, next period", tls.VersionTLS13, master, now.Add(Period), true},
		{"same HSM key, two periods on", tls.VersionTLS13, master, now.Add(2 * Period), false},
		{"another installation's key", tls.VersionTLS13, other, now, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := serve(t, cert, master, now)
			second := serve(t, cert, tc.second, tc.at)
			client := &tls.Config{RootCAs: pool, ServerName: "replica.test", MinVersion: tc.version, MaxVersion: tc.version,
				ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			if dial(t, first, client) {
				t.Fatal("the first connection resumed a session it never had")
			}
			if got := dial(t, second, client); got != tc.resume {
				t.Fatalf("resumed on the second server: %v, want %v", got, tc.resume)
			}
		})
	}
}

func TestKeysDifferPerPeriodAndKey(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	a, err := Keys(ctx, master, now)
	if err != nil {
		t.Fatal(err)
	}
	next, _ := Keys(ctx, master, now.Add(Period))
	b, _ := Keys(ctx, otherKey(t), now)
	if len(a) != 3 || a[0] == a[1] || a[0] == a[2] || a[1] == a[2] {
		t.Fatalf("want three distinct keys, got %x", a)
	}
	if next[0] != a[2] || next[1] != a[0] {
		t.Fatal("the next period's current key is not this period's next one")
	}
	if b[0] == a[0] {
		t.Fatal("two keys derived the same ticket key")
	}
}

// master is the KDF master key every replica of one installation holds,
// in SoftHSM.
var master Deriver

func TestMain(m *testing.M) {
	os.Exit(softhsmtest.Main(m, "tickets", "pkcs11:object=master;type=secret-key", "pkcs11:object=kek;type=secret-key",
		func(tok *softhsmtest.KDFToken) { master = tok.Master }))
}

// softKey is another installation's master key, in software: this
// process cannot open a second SoftHSM token, and what matters here is
// only that the key differs.
type softKey []byte

func (k softKey) Sum(_ context.Context, data []byte) ([]byte, error) {
	m := hmac.New(sha256.New, k)
	m.Write(data)
	return m.Sum(nil), nil
}

func otherKey(t *testing.T) Deriver {
	k := make(softKey, 32)
	rand.Read(k)
	return k
}

// serve runs a TLS server with the ticket keys d derives at at; each
// connection gets one byte, so the client reads the TLS 1.3 ticket that
// precedes it.
func serve(t *testing.T, cert tls.Certificate, d Deriver, at time.Time) string {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if err := Set(context.Background(), cfg, d, at); err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Write([]byte{1})
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, addr string, cfg *tls.Config) (resumed bool) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return c.ConnectionState().DidResume
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "replica.test"},
		DNSNames: []string{"replica.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
