package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/forwardapi"
)

type task func(ctx context.Context) (enrolments int, err error)

type obsIdentity struct {
	id   string
	conn *client.Conn
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
	if path == PathToken {
		return r.tokenTasks(ids), nil
	}
	obfID := ""
	if forwards(path) {
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
	case PathEST, PathESTNewConn, PathESTResume:
		conn := r.conn
		if path != PathEST {
			conn = client.NewConn(r.t.Base, r.t.Anchor, nil)
			tr := conn.HTTP.Transport.(*http.Transport)
			tr.DisableKeepAlives = true
			if path == PathESTResume {
				tr.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(64)
			}
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
	case PathPSK, PathPSKMaster:
		mode := client.KeyModeExporter
		if path == PathPSKMaster {
			mode = client.KeyModeMaster
		}
		for i, b := range bundles {
			reqID := fmt.Sprintf("bench-request-%016d", i)
			work = append(work, func(ctx context.Context) (int, error) {
				key, err := r.conn.EnrolKeyWith(ctx, client.KeyRequest{Token: b.Token, AssignedID: b.AssignedID, RequestID: reqID,
					SUID: 22, TargetIDs: []string{"in-cse.bench.example"}, Mode: mode})
				if err != nil {
					return 0, err
				}
				r.led.key(key.CredentialID)
				return 1, nil
			})
		}
	case PathForward, PathForwardKey:
		// The line's work: each device's CSR, which the SP's CA
		// certifies (the OBS is a registration authority), or the shared
		// key the OBS loaded into the device, which the SP records.
		var items []client.ForwardItem
		for _, b := range bundles {
			it := client.ForwardItem{Token: b.Token, AssignedID: b.AssignedID}
			if path == PathForwardKey {
				value := make([]byte, 32)
				rand.Read(value)
				it.Key = &client.ForwardKey{SUID: 22, TargetIDs: []string{"in-cse.bench.example"}, Value: value}
			} else {
				der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: b.AssignedID}}, newKey())
				if err != nil {
					return nil, err
				}
				it.CSR = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
			}
			items = append(items, it)
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
					if x.Status == forwardapi.StatusRecorded || x.Status == forwardapi.StatusReplayed {
						ok++
						if x.KeyID != "" {
							r.led.key(x.CredentialID)
						} else if block, _ := pem.Decode([]byte(x.Certificate)); block != nil {
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

// tokenTasks asks for one enrolment bundle per device, proving control
// with its claim code, as the manufacturer at the factory does.
func (r *Runner) tokenTasks(ids []string) []task {
	work := make([]task, len(ids))
	for i, id := range ids {
		body := map[string]any{"proof": map[string]any{"claimCode": "claim-" + id}}
		work[i] = func(ctx context.Context) (int, error) {
			var b client.Bundle
			if err := r.conn.JSON(ctx, "POST", "/api/v1/devices/"+id+"/enrolments", r.auth(r.t.ManufacturerKey), body, &b); err != nil {
				return 0, err
			}
			if b.Token == "" || b.AssignedID == "" {
				return 0, fmt.Errorf("bundle for %s without token or assigned ID", id)
			}
			return 1, nil
		}
	}
	return work
}

// registerOBS registers the bench as a trusted OBS (a software key: the
// OBS's HSM is not what is measured) and keeps its identity.
func (r *Runner) registerOBS(ctx context.Context) (*obsIdentity, error) {
	clientKey := newKey()
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "bench-obs"}}, clientKey)
	var reg struct {
		ID         string `json:"obfId"`
		ClientCert string `json:"clientCert"`
	}
	err := r.conn.JSON(ctx, "POST", "/api/v1/obfs", r.auth(r.t.AdminKey), map[string]any{
		"name": fmt.Sprintf("bench-obs-%d", time.Now().UnixNano()), "kind": "obs", "trusted": true, "owner": r.t.OwnerName,
		"clientCsr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
	}, &reg)
	if err != nil {
		return nil, fmt.Errorf("register the bench OBS: %w", err)
	}
	chain, err := ca.ParseCertsPEM([]byte(reg.ClientCert))
	if err != nil {
		return nil, fmt.Errorf("register the bench OBS: client certificate: %w", err)
	}
	cert := tls.Certificate{PrivateKey: clientKey, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &obsIdentity{id: reg.ID, conn: client.NewConn(r.t.Base, r.t.Anchor, &cert)}, nil
}
