package bench

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credfactory/credfactory/kdf"
	"golang.org/x/sync/errgroup"
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
// every one of them holds exactly one credential, active, and it is one the
// bench received; every credential the bench received is in the registry;
// and every certificate chains to the trust anchor.
//
// The registry is read as its owner would audit it: the device listing
// with each device's credentials, a thousand devices per request
// (GET /api/v1/devices?include=credentials), while the chains are checked
// on every CPU.
func (r *Runner) Verify(ctx context.Context, results []Result) error {
	want := 0
	for _, x := range results {
		if x.Path != PathToken { // tokens enrol nothing
			want += x.Enrolments
		}
	}
	cacerts, err := r.conn.ESTCACerts(ctx)
	if err != nil {
		return fmt.Errorf("verify: CA certificates: %w", err)
	}
	r.led.intermediates(cacerts...)
	var chained int
	var chainErr error
	var chainTime time.Duration
	chainsDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(chainsDone)
		chained, chainErr = r.led.verifyChains(r.t.Anchor)
		chainTime = time.Since(start)
	}()
	devices, requests, err := r.registry(ctx)
	listTime := time.Since(start)
	<-chainsDone
	if err != nil {
		return err
	}
	rec := r.led.reconcile(devices)
	if chainErr != nil {
		rec.note("%v", chainErr)
	}
	if len(devices) != want || len(rec.problems) > 0 {
		return fmt.Errorf("verify: the registry has %d enrolled devices for %d successful enrolments, %d without exactly one credential, active: %v",
			len(devices), want, rec.doubles, rec.problems)
	}
	fmt.Fprintf(r.out, "verified: %d enrolments = %d enrolled devices, each with one active credential the bench received; %d certificates chain to the trust anchor, %d shared keys; nothing handed out is missing from the registry\n",
		want, len(devices), chained, rec.keys)
	fmt.Fprintf(r.out, "  registry read in %.2f s (%d requests), chains verified in %.2f s, side by side\n",
		listTime.Seconds(), requests, chainTime.Seconds())
	return nil
}

// credential is a device's credential as the device listing shows it.
type credential struct {
	ID     string `json:"credentialId"`
	Type   string `json:"type"`
	Status string `json:"status"`
	// SHA256 is the registry's fingerprint of a certificate.
	SHA256 string `json:"sha256"`
}

// registeredDevice is an enrolled device of the bench's, with its
// credentials.
type registeredDevice struct {
	ID          string       `json:"deviceId"`
	Credentials []credential `json:"credentials"`
}

// registry lists the bench's enrolled devices with their credentials
// through the portal, page by page, as the manufacturer.
func (r *Runner) registry(ctx context.Context) (devices []registeredDevice, requests int, err error) {
	for after := ""; ; {
		var page struct {
			Devices []registeredDevice `json:"devices"`
			Next    string             `json:"next"`
		}
		q := url.Values{"prefix": {"bench-"}, "state": {"enrolled"}, "include": {"credentials"}, "limit": {"1000"}, "after": {after}}
		requests++
		if err := r.conn.JSON(ctx, "GET", "/api/v1/devices?"+q.Encode(), r.auth(r.t.ManufacturerKey), nil, &page); err != nil {
			return nil, requests, fmt.Errorf("verify: list devices: %w", err)
		}
		devices = append(devices, page.Devices...)
		if page.Next == "" {
			return devices, requests, nil
		}
		if page.Next == after {
			return nil, requests, fmt.Errorf("verify: list devices: the listing does not advance past %s", after)
		}
		after = page.Next
	}
}

// reconciliation is what the registry and the ledger disagree on.
type reconciliation struct {
	doubles  int      // devices without exactly one credential, active
	keys     int      // shared keys found in both
	problems []string // the first few disagreements, for the message
}

func (c *reconciliation) note(format string, a ...any) {
	if len(c.problems) < 10 {
		c.problems = append(c.problems, fmt.Sprintf(format, a...))
	}
}

// reconcile holds the registry's view to the ledger, both ways: every
// enrolled device has one credential, active, that the bench received, and
// everything the bench received is held by exactly one device.
func (l *ledger) reconcile(devices []registeredDevice) *reconciliation {
	rec := &reconciliation{}
	seenCerts, seenKeys, seenDevices := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, d := range devices {
		if seenDevices[d.ID] {
			rec.note("device %s is listed twice", d.ID)
		}
		seenDevices[d.ID] = true
		if cs := d.Credentials; len(cs) != 1 || cs[0].Status != "active" {
			rec.doubles++
			active := 0
			for _, c := range cs {
				if c.Status == "active" {
					active++
				}
			}
			rec.note("device %s holds %d credentials, %d active", d.ID, len(cs), active)
			continue
		}
		c := d.Credentials[0]
		switch c.Type {
		case "x509":
			// The registry's fingerprint of the certificate, which its
			// Credential-ID must name too (TS-0003 §10.4).
			_, fp, err := kdf.ParseCredentialID(c.ID)
			if err != nil || fp != c.SHA256 {
				rec.note("device %s: certificate %s has fingerprint %q in the registry", d.ID, c.ID, c.SHA256)
				continue
			}
			if l.certs[fp] == nil {
				rec.note("device %s: certificate %s was never handed to the bench", d.ID, c.ID)
				continue
			}
			if seenCerts[fp] {
				rec.note("device %s: certificate %s is held by another device too", d.ID, c.ID)
			}
			seenCerts[fp] = true
		default:
			if !l.keys[c.ID] {
				rec.note("device %s: key %s was never handed to the bench", d.ID, c.ID)
				continue
			}
			if seenKeys[c.ID] {
				rec.note("device %s: key %s is held by another device too", d.ID, c.ID)
			}
			seenKeys[c.ID] = true
		}
	}
	for fp := range l.certs {
		if !seenCerts[fp] {
			rec.note("certificate %s was handed out but the registry does not hold it", fp)
		}
	}
	for id := range l.keys {
		if !seenKeys[id] {
			rec.note("key %s was handed out but the registry does not hold it", id)
		}
	}
	rec.keys = len(seenKeys)
	return rec
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
	opts = issuersAsAnchors(opts, anchor, l.inters)
	// One certificate per goroutine slot, on every CPU: 100,000 chains
	// took 15 s on one.
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	var n atomic.Int64
	for fp, der := range l.certs {
		g.Go(func() error {
			leaf, err := x509.ParseCertificate(der)
			if err != nil {
				return fmt.Errorf("certificate %s: %w", fp, err)
			}
			if _, err := leaf.Verify(opts); err != nil {
				return fmt.Errorf("certificate %s does not chain to the trust anchor: %w", fp, err)
			}
			n.Add(1)
			return nil
		})
	}
	err := g.Wait()
	return int(n.Load()), err
}

// issuersAsAnchors returns options under which a leaf is verified against
// the CA certificates that chain to anchor, checked here once, instead of
// checking the same CA-by-root signature again for each of 100,000 leaves
// (half the verification's time). It is the same validation only when the
// anchors restrict nothing below their direct subordinates: no name
// constraints and no extended key usage, which Go would otherwise apply to
// every leaf (RFC 5280 §4.2.1.10, §4.2.1.12), and only for CAs the anchors
// signed themselves. Otherwise, or when a CA does not chain, the options
// are returned unchanged and each leaf's whole path
// is built and checked.
func issuersAsAnchors(opts x509.VerifyOptions, anchor, inters []*x509.Certificate) x509.VerifyOptions {
	for _, a := range anchor {
		if a.PermittedDNSDomainsCritical || len(a.PermittedDNSDomains)+len(a.ExcludedDNSDomains)+len(a.PermittedIPRanges)+
			len(a.ExcludedIPRanges)+len(a.PermittedEmailAddresses)+len(a.ExcludedEmailAddresses)+len(a.PermittedURIDomains)+
			len(a.ExcludedURIDomains)+len(a.ExtKeyUsage)+len(a.UnknownExtKeyUsage) > 0 {
			return opts
		}
	}
	issuers := x509.NewCertPool()
	for _, c := range inters {
		caOpts := opts
		caOpts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
		// Only a CA the anchor signed directly: one further down would
		// leave the constraints of the CAs between them unchecked.
		chains, err := c.Verify(caOpts)
		if err != nil || !c.IsCA || !slices.ContainsFunc(chains, func(ch []*x509.Certificate) bool { return len(ch) == 2 }) {
			return opts
		}
		issuers.AddCert(c)
	}
	return x509.VerifyOptions{Roots: issuers, KeyUsages: opts.KeyUsages, CurrentTime: opts.CurrentTime}
}
