package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/credfactory/credfactory/crlreason"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ocsp"
)

var oidCRLReason = asn1.ObjectIdentifier{2, 5, 29, 21}

func intp(i int) *int { return &i }

func TestNormalizeReason(t *testing.T) {
	tests := []struct {
		in   *int
		want int
	}{
		{nil, 0}, {intp(0), 0}, {intp(1), 1}, {intp(4), 4}, {intp(5), 5}, {intp(6), 6},
		{intp(7), 0}, {intp(8), 0}, {intp(9), 9}, {intp(10), 10}, {intp(11), 0}, {intp(-1), 0},
	}
	for _, tt := range tests {
		if got := crlreason.Normalize(tt.in); got != tt.want {
			t.Errorf("crlreason.Normalize(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestSignCRL(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, nil)
	thisUpdate := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	revokedAt := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	entries := []x509.RevocationListEntry{
		{SerialNumber: big.NewInt(0x10), RevocationTime: revokedAt, ReasonCode: crlreason.Unspecified},
		{SerialNumber: big.NewInt(0x11), RevocationTime: revokedAt, ReasonCode: crlreason.KeyCompromise},
		{SerialNumber: big.NewInt(0x12), RevocationTime: revokedAt, ReasonCode: crlreason.Superseded},
	}
	crl, err := c.SignCRL(context.Background(), nil, thisUpdate, thisUpdate.Add(24*time.Hour), entries)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509.ParseRevocationList(crl.DER)
	if err != nil {
		t.Fatal(err)
	}
	if err := parsed.CheckSignatureFrom(p.inter); err != nil {
		t.Errorf("CRL signature: %v", err)
	}
	if parsed.Number.Cmp(CRLNumber(thisUpdate)) != 0 || crl.Number.Cmp(parsed.Number) != 0 {
		t.Errorf("CRL number %v (reported %v), want %v", parsed.Number, crl.Number, CRLNumber(thisUpdate))
	}
	if !bytes.Equal(parsed.AuthorityKeyId, p.inter.SubjectKeyId) {
		t.Errorf("AKI %x, want the issuer's SKI %x", parsed.AuthorityKeyId, p.inter.SubjectKeyId)
	}
	if !parsed.ThisUpdate.Equal(thisUpdate.Truncate(time.Second)) || !crl.ThisUpdate.Equal(parsed.ThisUpdate) ||
		!parsed.NextUpdate.Equal(crl.NextUpdate) {
		t.Errorf("thisUpdate %v / nextUpdate %v, reported %v / %v", parsed.ThisUpdate, parsed.NextUpdate, crl.ThisUpdate, crl.NextUpdate)
	}
	if crl.Entries != 3 || len(parsed.RevokedCertificateEntries) != 3 {
		t.Fatalf("entries %d / %d, want 3", crl.Entries, len(parsed.RevokedCertificateEntries))
	}
	for i, e := range parsed.RevokedCertificateEntries {
		want := entries[i]
		hasReason := false
		for _, ext := range e.Extensions {
			hasReason = hasReason || ext.Id.Equal(oidCRLReason)
		}
		if e.SerialNumber.Cmp(want.SerialNumber) != 0 || e.ReasonCode != want.ReasonCode || !e.RevocationTime.Equal(revokedAt) {
			t.Errorf("entry %d: serial %v reason %d at %v, want %v %d %v", i, e.SerialNumber, e.ReasonCode, e.RevocationTime,
				want.SerialNumber, want.ReasonCode, revokedAt)
		}
		// RFC 5280 §5.3.1: unspecified SHOULD be absent.
		if hasReason != (want.ReasonCode != crlreason.Unspecified) {
			t.Errorf("entry %d: reason extension present=%v for reason %d", i, hasReason, want.ReasonCode)
		}
	}

	if _, err := c.SignCRL(context.Background(), nil, thisUpdate, thisUpdate, nil); err == nil {
		t.Error("a CRL whose nextUpdate is not after thisUpdate was signed")
	}
	empty, err := c.SignCRL(context.Background(), nil, thisUpdate.Add(time.Nanosecond), thisUpdate.Add(time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	if empty.Number.Cmp(crl.Number) <= 0 {
		t.Errorf("CRL number %v of a later CRL is not above %v", empty.Number, crl.Number)
	}
}

func TestParseSerialHex(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
		ok   bool
	}{{"1f", 31, true}, {"0", 0, false}, {"", 0, false}, {"xyz", 0, false}, {"-5", 0, false}} {
		got, err := ParseSerialHex(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got.Int64() != tt.want) {
			t.Errorf("ParseSerialHex(%q) = %v, %v", tt.in, got, err)
		}
	}
}

// issueLeaf issues a device certificate from c.
func issueLeaf(t *testing.T, c *CA) *x509.Certificate {
	t.Helper()
	issued, err := c.Issue(context.Background(), Request{CSR: makeCSR(t, testKey(t, "p256-c"), nil), Profile: ProfileDevice,
		AssignedID: "Sdevice1", URIs: []*url.URL{mustURL(t, "https://sp.example/Sdevice1")}})
	if err != nil {
		t.Fatal(err)
	}
	return issued.Certificate
}

func requestWithNonce(t *testing.T, leaf, issuer *x509.Certificate, hash crypto.Hash, nonce []byte) []byte {
	t.Helper()
	der, err := NewOCSPRequest(leaf, issuer, hash, nonce)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// responseNonce digs the nonce out of responseExtensions, which
// x/crypto/ocsp does not parse.
func responseNonce(t *testing.T, der []byte) []byte {
	t.Helper()
	var outer struct {
		Status   asn1.Enumerated
		Response struct {
			Type  asn1.ObjectIdentifier
			Bytes []byte
		} `asn1:"explicit,tag:0"`
	}
	if _, err := asn1.Unmarshal(der, &outer); err != nil {
		t.Fatal(err)
	}
	var basic struct {
		TBS struct {
			ResponderID asn1.RawValue
			ProducedAt  time.Time `asn1:"generalized"`
			Responses   asn1.RawValue
			Extensions  []pkix.Extension `asn1:"explicit,tag:1,optional"`
		}
		Alg asn1.RawValue
		Sig asn1.BitString
	}
	if _, err := asn1.Unmarshal(outer.Response.Bytes, &basic); err != nil {
		t.Fatal(err)
	}
	for _, e := range basic.TBS.Extensions {
		if e.Id.Equal(oidOCSPNonce) {
			var n []byte
			if _, err := asn1.Unmarshal(e.Value, &n); err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return nil
}

func TestOCSPRespond(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, func(cfg *Config) { cfg.Now = nil }) // x/crypto checks times against the wall clock
	leaf := issueLeaf(t, c)
	now := time.Now().UTC().Truncate(time.Second)
	revokedAt := now.Add(-time.Hour)
	nonce := []byte("0123456789abcdef")

	tests := []struct {
		name      string
		hash      crypto.Hash
		nonce     []byte
		answer    OCSPAnswer
		wantReas  int
		wantNonce bool
	}{
		{name: "good sha1", hash: crypto.SHA1, answer: OCSPAnswer{Status: OCSPGood}},
		{name: "good sha256 nonce", hash: crypto.SHA256, nonce: nonce, wantNonce: true, answer: OCSPAnswer{Status: OCSPGood}},
		{name: "revoked key compromise", hash: crypto.SHA1, nonce: nonce, wantNonce: true,
			answer: OCSPAnswer{Status: OCSPRevoked, RevokedAt: revokedAt, Reason: crlreason.KeyCompromise}, wantReas: ocsp.KeyCompromise},
		{name: "revoked unspecified", hash: crypto.SHA1,
			answer: OCSPAnswer{Status: OCSPRevoked, RevokedAt: revokedAt}, wantReas: ocsp.Unspecified},
		{name: "unknown", hash: crypto.SHA384, answer: OCSPAnswer{Status: OCSPUnknown}},
		{name: "oversized nonce not echoed", hash: crypto.SHA1, nonce: bytes.Repeat([]byte{7}, 33), answer: OCSPAnswer{Status: OCSPGood}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var der []byte
			if tt.nonce != nil {
				der = requestWithNonce(t, leaf, p.inter, tt.hash, tt.nonce)
			} else {
				var err error
				if der, err = ocsp.CreateRequest(leaf, p.inter, &ocsp.RequestOptions{Hash: tt.hash}); err != nil {
					t.Fatal(err)
				}
			}
			req, err := ParseOCSPRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if req.Serial.Cmp(leaf.SerialNumber) != 0 || !c.IsOurs(req) {
				t.Fatalf("parsed serial %v (want %v), ours=%v", req.Serial, leaf.SerialNumber, c.IsOurs(req))
			}
			a := tt.answer
			a.ThisUpdate, a.NextUpdate = now, now.Add(time.Hour)
			resp, err := c.SignOCSP(context.Background(), req, a)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ocsp.ParseResponseForCert(resp, leaf, p.inter)
			if err != nil {
				t.Fatalf("x/crypto cannot read our response: %v", err)
			}
			wantStatus := map[OCSPStatus]int{OCSPGood: ocsp.Good, OCSPRevoked: ocsp.Revoked, OCSPUnknown: ocsp.Unknown}[a.Status]
			if got.Status != wantStatus || !got.ThisUpdate.Equal(now) || !got.NextUpdate.Equal(now.Add(time.Hour)) {
				t.Errorf("status %d this %v next %v, want %d %v %v", got.Status, got.ThisUpdate, got.NextUpdate, wantStatus, now, now.Add(time.Hour))
			}
			if a.Status == OCSPRevoked && (!got.RevokedAt.Equal(revokedAt) || got.RevocationReason != tt.wantReas) {
				t.Errorf("revoked at %v reason %d, want %v %d", got.RevokedAt, got.RevocationReason, revokedAt, tt.wantReas)
			}
			if got.IssuerHash != tt.hash {
				t.Errorf("CertID hash %v, want the request's %v", got.IssuerHash, tt.hash)
			}
			if n := responseNonce(t, resp); tt.wantNonce != (n != nil) || (tt.wantNonce && !bytes.Equal(n, tt.nonce)) {
				t.Errorf("response nonce %x, want %x (echo=%v)", n, tt.nonce, tt.wantNonce)
			}
		})
	}
}

func TestOCSPRequestNotOurs(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, nil)
	other := newTestPKI(t) // same keys (cached), other certificates: a different issuer name hash
	other.inter.RawSubject = mustRawSubject(t, "another issuing CA")
	leaf := issueLeaf(t, c)

	for _, tt := range []struct {
		name   string
		issuer *x509.Certificate
		ours   bool
	}{{"our issuer", p.inter, true}, {"root as issuer", p.root, false}, {"other name same key", other.inter, false}} {
		der, err := ocsp.CreateRequest(leaf, tt.issuer, nil)
		if err != nil {
			t.Fatal(err)
		}
		req, err := ParseOCSPRequest(der)
		if err != nil {
			t.Fatal(err)
		}
		if c.IsOurs(req) != tt.ours {
			t.Errorf("%s: IsOurs = %v, want %v", tt.name, !tt.ours, tt.ours)
		}
	}
}

func mustRawSubject(t *testing.T, cn string) []byte {
	t.Helper()
	b, err := asn1.Marshal(pkix.Name{CommonName: cn}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseOCSPRequestMalformed(t *testing.T) {
	p := newTestPKI(t)
	c := p.newCA(t, nil)
	leaf := issueLeaf(t, c)
	good, err := ocsp.CreateRequest(leaf, p.inter, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Two CertIDs in one requestList.
	in := cryptobyte.String(good)
	var req, tbs, list, one cryptobyte.String
	in.ReadASN1(&req, cbasn1.SEQUENCE)
	req.ReadASN1(&tbs, cbasn1.SEQUENCE)
	tbs.ReadASN1(&list, cbasn1.SEQUENCE)
	list.ReadASN1Element(&one, cbasn1.SEQUENCE)
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(r *cryptobyte.Builder) {
		r.AddASN1(cbasn1.SEQUENCE, func(tb *cryptobyte.Builder) {
			tb.AddASN1(cbasn1.SEQUENCE, func(l *cryptobyte.Builder) { l.AddBytes(one); l.AddBytes(one) })
		})
	})
	two := b.BytesOrPanic()

	for _, tt := range []struct {
		name string
		der  []byte
	}{
		{"empty", nil},
		{"garbage", []byte("hello, OCSP")},
		{"truncated", good[:len(good)-3]},
		{"trailing data", append(append([]byte(nil), good...), 0)},
		{"two certificates", two},
		{"a certificate instead", leaf.Raw},
		{"oversized", make([]byte, MaxOCSPRequestSize+1)},
	} {
		if _, err := ParseOCSPRequest(tt.der); !errors.Is(err, ErrMalformedOCSP) {
			t.Errorf("%s: err = %v, want ErrMalformedOCSP", tt.name, err)
		}
	}
	if _, err := ParseOCSPRequest(good); err != nil {
		t.Errorf("a well-formed request: %v", err)
	}
}

func FuzzParseOCSPRequest(f *testing.F) {
	p := newTestPKI(f)
	c := p.newCA(f, nil)
	leaf, err := c.Issue(context.Background(), Request{CSR: makeCSR(f, testKey(f, "p256-c"), nil), Profile: ProfileDevice,
		AssignedID: "Sdevice1", URIs: []*url.URL{mustURL(f, "https://sp.example/Sdevice1")}})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := ocsp.CreateRequest(leaf.Certificate, p.inter, nil)
	f.Add(good)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		req, err := ParseOCSPRequest(der)
		if err != nil {
			if !errors.Is(err, ErrMalformedOCSP) {
				t.Fatalf("error %v does not wrap ErrMalformedOCSP", err)
			}
			return
		}
		if req.Serial == nil || len(req.certID) == 0 {
			t.Fatal("parsed request without serial or CertID")
		}
	})
}
