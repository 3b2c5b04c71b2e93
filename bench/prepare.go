package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
)

type task func(ctx context.Context) (enrolments int, err error)

type obsIdentity struct {
	id     string
	conn   *client.Conn
	sub    *x509.Certificate
	subKey *ecdsa.PrivateKey
}

func (r *Runner) auth(key string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + key}
}

// devices pre-enrols n fresh devices with claim codes and returns their IDs.
func (r *Runner) devices(ctx context.Context, n int) ([]string, error) {
	run := r.nextID.Add(1)
	var csv strings.Builder
	csv.WriteString("deviceId,claimCode\n")
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%d-%d-%07d", time.Now().Unix(), run, i)
		fmt.Fprintf(&csv, "%s,claim-%s\n", ids[i], ids[i])
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", r.t.Base+"/api/v1/devices", strings.NewReader(csv.String()))
	req.Header.Set("Content-Type", "text/csv")
	req.Header.Set("Authorization", "Bearer "+r.t.ManufacturerKey)
	resp, err := r.conn.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("pre-enrol: HTTP %d", resp.StatusCode)
	}
	return ids, nil
}

// bundles proves control of each device and collects its bundle, eight at a
// time (setup, not timed).
func (r *Runner) bundles(ctx context.Context, ids []string, obfID string) ([]client.Bundle, error) {
	out := make([]client.Bundle, len(ids))
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				body := map[string]any{"proof": map[string]any{"claimCode": "claim-" + ids[i]}}
				if obfID != "" {
					body["obfId"] = obfID
				}
				if err := r.conn.JSON(ctx, "POST", "/api/v1/devices/"+ids[i]+"/enrolments", r.auth(r.t.ManufacturerKey), body, &out[i]); err != nil {
					select {
					case errs <- fmt.Errorf("token for %s: %w", ids[i], err):
					default:
					}
				}
			}
		}()
	}
	for i := range ids {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
		return out, nil
	}
}

func (r *Runner) prepare(ctx context.Context, path string, n, batch int) ([]task, error) {
	ids, err := r.devices(ctx, n)
	if err != nil {
		return nil, err
	}
	obfID := ""
	if path == PathForward {
		if r.obs == nil {
			if r.obs, err = r.registerOBS(ctx); err != nil {
				return nil, err
			}
		}
		obfID = r.obs.id
	}
	bundles, err := r.bundles(ctx, ids, obfID)
	if err != nil {
		return nil, err
	}
	var work []task
	switch path {
	case PathEST, PathESTNewConn:
		conn := r.conn
		if path == PathESTNewConn {
			conn = client.NewConn(r.t.Base, r.t.Anchor, nil)
			conn.HTTP.Transport.(*http.Transport).DisableKeepAlives = true
		}
		for _, b := range bundles {
			csr, err := client.CSR(newKey(), b.AssignedID, b.Token)
			if err != nil {
				return nil, err
			}
			work = append(work, func(ctx context.Context) (int, error) {
				certs, err := conn.ESTEnroll(ctx, csr, false)
				if err != nil {
					return 0, err
				}
				r.led.cert(certs[0].Raw)
				return 1, nil
			})
		}
	case PathPSK:
		for i, b := range bundles {
			reqID := fmt.Sprintf("bench-request-%016d", i)
			work = append(work, func(ctx context.Context) (int, error) {
				key, err := r.conn.EnrolKey(ctx, b.Token, b.AssignedID, reqID, 22, []string{"in-cse.bench.example"})
				if err != nil {
					return 0, err
				}
				r.led.key(key.CredentialID)
				return 1, nil
			})
		}
	case PathForward:
		var items []client.ForwardItem
		for _, b := range bundles {
			cert, err := r.obs.issue(r.t.SPDomain, b.AssignedID)
			if err != nil {
				return nil, err
			}
			items = append(items, client.ForwardItem{Token: b.Token, AssignedID: b.AssignedID, Certificate: cert})
		}
		for start := 0; start+batch <= len(items); start += batch {
			part := items[start : start+batch]
			work = append(work, func(ctx context.Context) (int, error) {
				res, err := r.obs.conn.Forward(ctx, part)
				if err != nil {
					return 0, err
				}
				ok, why := 0, ""
				for _, x := range res {
					if x.Status == "recorded" || x.Status == "replayed" {
						ok++
						if x.Index >= 0 && x.Index < len(part) {
							block, _ := pem.Decode([]byte(part[x.Index].Certificate))
							r.led.cert(block.Bytes)
						}
					} else if why == "" {
						why = x.Code
					}
				}
				if ok < len(part) {
					return ok, refused(why)
				}
				return ok, nil
			})
		}
	default:
		return nil, fmt.Errorf("unknown path %q", path)
	}
	return work, nil
}

// registerOBS registers the bench as a trusted OBS (software keys: the
// OBS's HSM is not what is measured) and keeps its identity.
func (r *Runner) registerOBS(ctx context.Context) (*obsIdentity, error) {
	clientKey, subKey := newKey(), newKey()
	csr := func(k *ecdsa.PrivateKey) string {
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "bench-obs"}}, k)
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}
	var reg struct {
		ID         string `json:"obfId"`
		ClientCert string `json:"clientCert"`
		SubCACert  string `json:"subCaCert"`
	}
	err := r.conn.JSON(ctx, "POST", "/api/v1/obfs", r.auth(r.t.AdminKey), map[string]any{
		"name": fmt.Sprintf("bench-obs-%d", time.Now().UnixNano()), "kind": "obs", "trusted": true, "owner": r.t.OwnerName,
		"clientCsr": csr(clientKey), "subCaCsr": csr(subKey), "permittedDnsDomains": []string{"bench.factory.example"},
	}, &reg)
	if err != nil {
		return nil, fmt.Errorf("register the bench OBS: %w", err)
	}
	chain, err := ca.ParseCertsPEM([]byte(reg.ClientCert))
	if err != nil {
		return nil, fmt.Errorf("register the bench OBS: client certificate: %w", err)
	}
	sub, err := ca.ParseCertsPEM([]byte(reg.SubCACert))
	if err != nil {
		return nil, fmt.Errorf("register the bench OBS: sub-CA certificate: %w", err)
	}
	cert := tls.Certificate{PrivateKey: clientKey, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	r.led.intermediates(sub...)
	return &obsIdentity{id: reg.ID, conn: client.NewConn(r.t.Base, r.t.Anchor, &cert), sub: sub[0], subKey: subKey}, nil
}

// issue plays the OBS's own MEF: a device certificate from its sub-CA.
func (o *obsIdentity) issue(spDomain, assignedID string) (string, error) {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: assignedID},
		URIs:      []*url.URL{{Host: spDomain, Path: "/" + strings.TrimPrefix(assignedID, "/")}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	dev := newKey()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, o.sub, &dev.PublicKey, o.subKey)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}
