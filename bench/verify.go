package bench

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/url"
	"sync"

	"github.com/credfactory/credfactory/kdf"
)

// ledger is what the server handed out during the run, so that Verify can
// hold the registry to it: a credential a client got must be there, once.
type ledger struct {
	mu    sync.Mutex
	certs map[string][]byte // hex SHA-256 of the DER -> DER
	keys  map[string]bool   // Credential-IDs of shared keys
	// inters are the CA certificates between a leaf and the trust anchor:
	// the issuing CA (EST and forwarding alike).
	inters []*x509.Certificate
}

func (l *ledger) cert(der []byte) {
	sum := sha256.Sum256(der)
	l.mu.Lock()
	if l.certs == nil {
		l.certs = map[string][]byte{}
	}
	l.certs[hex.EncodeToString(sum[:])] = der
	l.mu.Unlock()
}

func (l *ledger) key(credentialID string) {
	l.mu.Lock()
	if l.keys == nil {
		l.keys = map[string]bool{}
	}
	l.keys[credentialID] = true
	l.mu.Unlock()
}

func (l *ledger) intermediates(certs ...*x509.Certificate) {
	l.mu.Lock()
	l.inters = append(l.inters, certs...)
	l.mu.Unlock()
}

// Verify checks the run against the registry: the devices the portal shows
// enrolled are exactly as many as the enrolments the bench saw succeed;
// every one of them holds exactly one active credential, and it is one the
// bench received; every credential the bench received is in the registry;
// and every certificate chains to the trust anchor.
func (r *Runner) Verify(ctx context.Context, results []Result) error {
	want := 0
	for _, x := range results {
		if x.Path != PathToken { // tokens enrol nothing
			want += x.Enrolments
		}
	}
	var ids []string
	for after := ""; ; {
		var page struct {
			Devices []struct {
				ID string `json:"deviceId"`
			} `json:"devices"`
			Next string `json:"next"`
		}
		q := url.Values{"prefix": {"bench-"}, "state": {"enrolled"}, "limit": {"1000"}, "after": {after}}
		if err := r.conn.JSON(ctx, "GET", "/api/v1/devices?"+q.Encode(), r.auth(r.t.ManufacturerKey), nil, &page); err != nil {
			return fmt.Errorf("verify: list devices: %w", err)
		}
		for _, d := range page.Devices {
			ids = append(ids, d.ID)
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}

	type credential struct {
		ID     string `json:"credentialId"`
		Type   string `json:"type"`
		Status string `json:"status"`
	}
	creds := make([][]credential, len(ids))
	errs := make(chan error, 8)
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var d struct {
					Credentials []credential `json:"credentials"`
				}
				if err := r.conn.JSON(ctx, "GET", "/api/v1/devices/"+ids[i], r.auth(r.t.ManufacturerKey), nil, &d); err != nil {
					errs <- fmt.Errorf("verify: device %s: %w", ids[i], err)
					return
				}
				creds[i] = d.Credentials
			}
		}()
	}
	var ferr error
feed:
	for i := range ids {
		select {
		case next <- i:
		case ferr = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if ferr == nil && len(errs) > 0 {
		ferr = <-errs
	}
	if ferr != nil {
		return ferr
	}

	var problems []string
	note := func(format string, a ...any) {
		if len(problems) < 10 {
			problems = append(problems, fmt.Sprintf(format, a...))
		}
	}
	doubles, seenCerts, seenKeys := 0, map[string]bool{}, map[string]bool{}
	for i, cs := range creds {
		if len(cs) != 1 || cs[0].Status != "active" {
			doubles++
			note("device %s holds %d credentials", ids[i], len(cs))
			continue
		}
		c := cs[0]
		switch c.Type {
		case "x509":
			_, fp, err := kdf.ParseCredentialID(c.ID)
			if err != nil || r.led.certs[fp] == nil {
				note("device %s: certificate %s was never handed to the bench", ids[i], c.ID)
				continue
			}
			seenCerts[fp] = true
		default:
			if !r.led.keys[c.ID] {
				note("device %s: key %s was never handed to the bench", ids[i], c.ID)
				continue
			}
			seenKeys[c.ID] = true
		}
	}
	for fp := range r.led.certs {
		if !seenCerts[fp] {
			note("certificate %s was handed out but the registry does not hold it", fp)
		}
	}
	for id := range r.led.keys {
		if !seenKeys[id] {
			note("key %s was handed out but the registry does not hold it", id)
		}
	}
	cacerts, err := r.conn.ESTCACerts(ctx)
	if err != nil {
		return fmt.Errorf("verify: CA certificates: %w", err)
	}
	r.led.intermediates(cacerts...)
	chained, err := r.led.verifyChains(r.t.Anchor)
	if err != nil {
		note("%v", err)
	}
	if len(ids) != want || len(problems) > 0 {
		return fmt.Errorf("verify: the registry has %d enrolled devices for %d successful enrolments, %d without exactly one active credential: %v",
			len(ids), want, doubles, problems)
	}
	fmt.Fprintf(r.out, "verified: %d enrolments = %d enrolled devices, each with one active credential the bench received; %d certificates chain to the trust anchor, %d shared keys; nothing handed out is missing from the registry\n",
		want, len(ids), chained, len(seenKeys))
	return nil
}

// verifyChains checks every certificate the bench received against the
// trust anchor, as a relying party would (client authentication, now).
func (l *ledger) verifyChains(anchor []*x509.Certificate) (int, error) {
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range anchor {
		roots.AddCert(c)
	}
	for _, c := range l.inters {
		inters.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	n := 0
	for fp, der := range l.certs {
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			return n, fmt.Errorf("certificate %s: %w", fp, err)
		}
		if _, err := leaf.Verify(opts); err != nil {
			return n, fmt.Errorf("certificate %s does not chain to the trust anchor: %w", fp, err)
		}
		n++
	}
	return n, nil
}
