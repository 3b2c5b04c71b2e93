package hatest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/kdf"
	"golang.org/x/crypto/ocsp"
)

// device pre-enrols one device for maker (an API key) and returns its ID
// and enrolment bundle.
func (c *cluster) device(t *testing.T, maker, prefix string) (string, client.Bundle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := c.conn(c.env["HA_HTTPS_URL"])
	id := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
	auth := map[string]string{"Authorization": "Bearer " + maker}
	var res struct {
		Accepted int `json:"accepted"`
	}
	if err := conn.JSON(ctx, "POST", "/api/v1/devices", auth, []map[string]string{{"deviceId": id, "claimCode": "claim-" + id}}, &res); err != nil || res.Accepted != 1 {
		t.Fatalf("pre-enrol %s: %v (accepted %d)", id, err, res.Accepted)
	}
	var b client.Bundle
	if err := conn.JSON(ctx, "POST", "/api/v1/devices/"+id+"/enrolments", auth,
		map[string]any{"proof": map[string]any{"claimCode": "claim-" + id}}, &b); err != nil {
		t.Fatalf("bundle for %s: %v", id, err)
	}
	return id, b
}

type credential struct {
	ID     string `json:"credentialId"`
	Status string `json:"status"`
}

func (c *cluster) credentials(t *testing.T, maker, id string) []credential {
	t.Helper()
	var d struct {
		Credentials []credential `json:"credentials"`
	}
	if err := c.conn(c.env["HA_HTTPS_URL"]).JSON(context.Background(), "GET", "/api/v1/devices/"+id,
		map[string]string{"Authorization": "Bearer " + maker}, nil, &d); err != nil {
		t.Fatalf("device %s: %v", id, err)
	}
	return d.Credentials
}

// TestTokenRace: one token sent to every replica at once, by four clients
// per replica with a CSR each (EST) or a request ID each (shared key),
// bypassing HAProxy: exactly one wins, the rest are refused, and the
// registry holds the winner's credential only.
func TestTokenRace(t *testing.T) {
	c := requireCluster(t)
	c.waitWhole(t)
	maker := c.account(t, "ha-race")
	for _, path := range []string{"est", "psk"} {
		t.Run(path, func(t *testing.T) {
			id, b := c.device(t, maker, "ha-race-"+path)
			type answer struct {
				replica int
				id      string // the credential's Credential-ID or certificate fingerprint
				err     error
			}
			var answers []answer
			var mu sync.Mutex
			var wg sync.WaitGroup
			start := make(chan struct{})
			for r := 1; r <= c.replicas(); r++ {
				conn := c.conn(c.replicaURL(r))
				for k := 0; k < 4; k++ {
					key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
					csr, err := client.CSR(key, b.AssignedID, b.Token)
					if err != nil {
						t.Fatal(err)
					}
					reqID := fmt.Sprintf("ha-race-request-%d-%d", r, k)
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						a := answer{replica: r}
						if path == "est" {
							var certs []*x509.Certificate
							if certs, a.err = conn.ESTEnroll(context.Background(), csr, false); a.err == nil {
								sum := sha256.Sum256(certs[0].Raw)
								a.id = hex.EncodeToString(sum[:])
							}
						} else {
							var k client.KeyAnswer
							if k, a.err = conn.EnrolKey(context.Background(), b.Token, b.AssignedID,
								reqID, 22, []string{"in-cse.ha.example"}); a.err == nil {
								a.id = k.CredentialID
							}
						}
						mu.Lock()
						answers = append(answers, a)
						mu.Unlock()
					}()
				}
			}
			close(start)
			wg.Wait()
			var winners []answer
			for _, a := range answers {
				var e *client.Error
				switch {
				case a.err == nil:
					winners = append(winners, a)
				case errors.As(a.err, &e) && e.Status >= 400 && e.Status < 500:
				default:
					t.Errorf("replica %d: %v (want a refusal)", a.replica, a.err)
				}
			}
			if len(winners) != 1 {
				t.Fatalf("%d winners, want exactly 1: %+v", len(winners), answers)
			}
			creds := c.credentials(t, maker, id)
			if len(creds) != 1 || creds[0].Status != "active" {
				t.Fatalf("registry holds %+v, want one active credential", creds)
			}
			got := creds[0].ID
			if path == "est" {
				_, fp, err := kdf.ParseCredentialID(got)
				if err != nil {
					t.Fatal(err)
				}
				got = fp
			}
			if got != winners[0].id {
				t.Errorf("registry holds %s, the winner got %s", got, winners[0].id)
			}
		})
	}
}

// TestRevocationAcrossReplicas: a revocation through one replica is listed
// in every replica's CRL within the stale window (a second, README
// "Revocation status") under a CRL number above every number any replica
// served before it, no replica's number goes down, and OCSP answers the
// same on every replica.
func TestRevocationAcrossReplicas(t *testing.T) {
	c := requireCluster(t)
	c.waitWhole(t)
	maker := c.account(t, "ha-revoke")
	id, b := c.device(t, maker, "ha-revoke")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := client.CSR(key, b.AssignedID, b.Token)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := c.conn(c.replicaURL(1)).ESTEnroll(context.Background(), csr, false)
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs[0]
	raw, err := os.ReadFile(filepath.Join(c.dir, "r1", "ca", "issuing.pem"))
	if err != nil {
		t.Fatal(err)
	}
	issuers, err := ca.ParseCertsPEM(raw)
	if err != nil {
		t.Fatal(err)
	}
	issuer := issuers[0]

	// Each replica serves the CRL it last generated, so before a revocation
	// two replicas may serve different (equally valid) numbers; each new
	// CRL's number is above every number reserved before it.
	highest := new(big.Int)
	last := map[int]*big.Int{}
	for r := 1; r <= c.replicas(); r++ {
		crl := c.crl(t, r, issuer)
		if listed(crl, leaf.SerialNumber) {
			t.Fatalf("replica %d lists the certificate before its revocation", r)
		}
		last[r] = crl.Number
		if crl.Number.Cmp(highest) > 0 {
			highest = crl.Number
		}
	}
	revokedAt := time.Now()
	if err := c.conn(c.replicaURL(2)).JSON(context.Background(), "POST", "/api/v1/devices/"+id+"/revoke",
		map[string]string{"Authorization": "Bearer " + maker}, map[string]any{"reason": "keyCompromise"}, nil); err != nil {
		t.Fatalf("revoke through replica 2: %v", err)
	}
	// The stale window is a second; allow the fetch and a CRL signature.
	const window = 3 * time.Second
	for r := 1; r <= c.replicas(); r++ {
		for {
			crl := c.crl(t, r, issuer)
			if crl.Number.Cmp(last[r]) < 0 {
				t.Errorf("replica %d: CRL number %v after its %v", r, crl.Number, last[r])
			}
			last[r] = crl.Number
			if listed(crl, leaf.SerialNumber) {
				if crl.Number.Cmp(highest) <= 0 {
					t.Errorf("replica %d lists the revocation in CRL number %v, not above %v (the highest before it)", r, crl.Number, highest)
				}
				t.Logf("replica %d lists it %v after the revocation (CRL number %v)", r, time.Since(revokedAt).Round(time.Millisecond), crl.Number)
				break
			}
			if time.Since(revokedAt) > window {
				t.Fatalf("replica %d's CRL does not list the revocation %v after it", r, window)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var first *ocsp.Response
	for r := 1; r <= c.replicas(); r++ {
		resp := c.ocsp(t, r, leaf, issuer)
		if resp.Status != ocsp.Revoked || resp.RevocationReason != ocsp.KeyCompromise {
			t.Errorf("replica %d: OCSP status %d reason %d, want revoked (keyCompromise)", r, resp.Status, resp.RevocationReason)
		}
		if first == nil {
			first = resp
		} else if !resp.RevokedAt.Equal(first.RevokedAt) || resp.Status != first.Status || resp.SerialNumber.Cmp(first.SerialNumber) != 0 {
			t.Errorf("replica %d answers %v revoked at %v, replica 1 %v at %v", r, resp.Status, resp.RevokedAt, first.Status, first.RevokedAt)
		}
	}
}

func listed(crl *x509.RevocationList, serial *big.Int) bool {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return true
		}
	}
	return false
}

func (c *cluster) crl(t *testing.T, r int, issuer *x509.Certificate) *x509.RevocationList {
	t.Helper()
	resp, err := c.conn(c.replicaURL(r)).HTTP.Get(c.replicaURL(r) + "/ca/v1/crl/issuing.crl")
	if err != nil {
		t.Fatalf("replica %d CRL: %v", r, err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("replica %d CRL: %s %s", r, resp.Status, der)
	}
	crl, err := x509.ParseRevocationList(der)
	if err == nil {
		err = crl.CheckSignatureFrom(issuer)
	}
	if err != nil {
		t.Fatalf("replica %d CRL: %v", r, err)
	}
	return crl
}

func (c *cluster) ocsp(t *testing.T, r int, leaf, issuer *x509.Certificate) *ocsp.Response {
	t.Helper()
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.conn(c.replicaURL(r)).HTTP.Post(c.replicaURL(r)+"/ocsp", "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatalf("replica %d OCSP: %v", r, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("replica %d OCSP: %s %s", r, resp.Status, strings.TrimSpace(string(body)))
	}
	out, err := ocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		t.Fatalf("replica %d OCSP: %v", r, err)
	}
	return out
}
