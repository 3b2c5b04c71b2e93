package obs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
)

// pki is the SP's hierarchy in software, as credfactory init makes it: a
// root, an issuing CA (device and server certificates) and the OBF CA
// that certifies OBFs' client certificates.
type pki struct {
	root           *x509.Certificate
	issuing, obfCA *ca.CA
	clientChain    []*x509.Certificate
	clientKey      *ecdsa.PrivateKey
	serverCert     tls.Certificate
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrDER(t *testing.T, k *ecdsa.PrivateKey) []byte {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	now := time.Now()
	rootKey, issKey, obfKey := newKey(t), newKey(t), newKey(t)
	root, err := ca.CreateRoot(rootKey, pkix.Name{CommonName: "test root"}, 24*time.Hour*3650, now)
	if err != nil {
		t.Fatal(err)
	}
	issCert, err := ca.CreateIntermediate(root, rootKey, issKey.Public(), pkix.Name{CommonName: "test issuing"}, 24*time.Hour*1000, now)
	if err != nil {
		t.Fatal(err)
	}
	obfCert, err := ca.CreateOBFCA(root, rootKey, obfKey.Public(), pkix.Name{CommonName: "test obf ca"}, 24*time.Hour*1000, now)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{root: root, clientKey: newKey(t)}
	if p.issuing, err = ca.New(ca.Config{Issuer: issCert, Signer: issKey, Chain: []*x509.Certificate{issCert, root}}); err != nil {
		t.Fatal(err)
	}
	if p.obfCA, err = ca.New(ca.Config{Issuer: obfCert, Signer: obfKey, Chain: []*x509.Certificate{obfCert, root}}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cl, err := p.obfCA.Issue(ctx, ca.Request{CSR: csrDER(t, p.clientKey), Profile: ca.ProfileOBFClient, AssignedID: "obf-1",
		URIs: []*url.URL{{Scheme: "urn", Opaque: "uuid:obs-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	p.clientChain = append([]*x509.Certificate{cl.Certificate}, cl.Chain...)
	srvKey := newKey(t)
	srv, err := p.issuing.Issue(ctx, ca.Request{CSR: csrDER(t, srvKey), Profile: ca.ProfileServer, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	p.serverCert = tls.Certificate{Certificate: [][]byte{srv.DER, issCert.Raw}, PrivateKey: srvKey}
	return p
}

// fakeSP answers POST /mef/v1/forward through answer; it checks the client
// certificate as the SP does (chain to the root). Its default answer
// records everything as the SP would: a certificate from the issuing CA
// for a CSR, SP-assigned IDs for a key. The transient-or-final decision is
// tested against the real server in cmd/credfactory (TestOBSEndToEnd) and
// the codes' classification in mef (TestForwardCodesOfRealFailures).
type fakeSP struct {
	*httptest.Server
	mu       sync.Mutex
	requests [][]client.ForwardItem
	answer   func(n int, items []client.ForwardItem) (int, []client.ForwardResult)
}

func newFakeSP(t *testing.T, p *pki) *fakeSP {
	f := &fakeSP{}
	f.answer = func(_ int, items []client.ForwardItem) (int, []client.ForwardResult) {
		return 200, recordAll(t, p, items)
	}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/mef/v1/forward" || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		var body struct {
			Items []client.ForwardItem `json:"items"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		f.mu.Lock()
		f.requests = append(f.requests, body.Items)
		n := len(f.requests)
		status, results := f.answer(n, body.Items)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status != 200 {
			fmt.Fprintf(w, `{"error":{"code":"c%d","message":"m"}}`, status)
			return
		}
		if err := json.NewEncoder(w).Encode(map[string]any{"results": results}); err != nil {
			t.Fatal(err)
		}
	}))
	roots := x509.NewCertPool()
	roots.AddCert(p.root)
	f.TLS = &tls.Config{Certificates: []tls.Certificate{p.serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots}
	f.StartTLS()
	t.Cleanup(f.Close)
	return f
}

func recordAll(t *testing.T, p *pki, items []client.ForwardItem) []client.ForwardResult {
	out := make([]client.ForwardResult, len(items))
	for i, it := range items {
		r := client.ForwardResult{Index: i, Status: "recorded", CredentialID: "c-" + it.AssignedID}
		if it.CSR != "" {
			block, _ := pem.Decode([]byte(it.CSR))
			issued, err := p.issuing.Issue(context.Background(), ca.Request{CSR: block.Bytes, Profile: ca.ProfileDevice, AssignedID: it.AssignedID,
				URIs: []*url.URL{{Scheme: "https", Host: "sp.example", Path: "/" + strings.TrimPrefix(it.AssignedID, "/")}}})
			if err != nil {
				t.Error(err)
				continue
			}
			r.Certificate = string(ca.EncodeCertsPEM(append([]*x509.Certificate{issued.Certificate}, issued.Chain...)))
		} else {
			r.KeyID, r.KeID = "k"+it.RequestID[:8]+"@sp.example", "e"+it.RequestID[:8]+"@sp.example"
			r.NotAfter = time.Now().Add(365 * 24 * time.Hour).UTC().Truncate(time.Second)
		}
		out[i] = r
	}
	return out
}

func (f *fakeSP) items() []client.ForwardItem {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []client.ForwardItem
	for _, r := range f.requests {
		all = append(all, r...)
	}
	return all
}

func writePEM(t *testing.T, path string, certs []*x509.Certificate) {
	if err := os.WriteFile(path, ca.EncodeCertsPEM(certs), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newTestOBS writes a config for an OBS with software keys pointed at
// spURL and returns it.
func newTestOBS(t *testing.T, p *pki, spURL, extra string) (*OBS, Config) {
	t.Helper()
	dir := t.TempDir()
	writePEM(t, filepath.Join(dir, "anchor.pem"), []*x509.Certificate{p.root})
	writePEM(t, filepath.Join(dir, "client.pem"), p.clientChain)
	cfgText := extra
	for _, line := range []string{"sp_url: " + spURL, "trust_anchor: anchor.pem", "client_cert: client.pem",
		"retry_timeout: 2s", "flush_interval: 50ms"} {
		if key, _, _ := strings.Cut(line, ":"); !strings.Contains(extra, key+":") {
			cfgText += line + "\n"
		}
	}
	path := filepath.Join(dir, "obs.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	o, err := New(cfg, Keys{Client: p.clientKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return o, cfg
}

var jobSeq int

func dropJob(t *testing.T, cfg Config, job map[string]any) string {
	t.Helper()
	jobSeq++
	name := fmt.Sprintf("job-%04d.json", jobSeq)
	raw, _ := json.Marshal(job)
	tmp := filepath.Join(cfg.Spool, DirIn, "."+name)
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(cfg.Spool, DirIn, name)); err != nil {
		t.Fatal(err)
	}
	return name
}

func bundle(id string) map[string]any {
	return map[string]any{"token": "tok-" + id, "assignedId": id, "expiresAt": time.Now().Add(time.Hour)}
}

func certJob(t *testing.T, id string) (map[string]any, *ecdsa.PrivateKey) {
	k := newKey(t)
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER(t, k)})
	return map[string]any{"bundle": bundle(id), "csr": string(csr)}, k
}

func keyJob(id string) map[string]any {
	return map[string]any{"bundle": bundle(id), "key": map[string]any{"suid": 22, "targetIds": []string{"Starget"}}}
}

func files(t *testing.T, cfg Config, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(cfg.Spool, dir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func readResult(t *testing.T, cfg Config, id string) Result {
	t.Helper()
	path := filepath.Join(cfg.Spool, DirOut, outName(id))
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", path, st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	var r Result
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestProvisionAndForward(t *testing.T) {
	p := newPKI(t)
	sp := newFakeSP(t, p)
	o, cfg := newTestOBS(t, p, sp.URL, "")
	cj, devKey := certJob(t, "Sdev1")
	dropJob(t, cfg, cj)
	dropJob(t, cfg, keyJob("Sdev2"))
	cj3, _ := certJob(t, "/cse-3")
	dropJob(t, cfg, cj3)

	sum, err := o.Run(context.Background(), true)
	if err != nil {
		t.Fatalf("run: %v (%s)", err, sum)
	}
	if sum.Provisioned != 3 || sum.Recorded != 3 || sum.Pending != 0 || sum.JobsLeft != 0 {
		t.Fatalf("summary: %s", sum)
	}
	if in, ob := files(t, cfg, DirIn), files(t, cfg, DirOutbox); len(in)+len(ob) != 0 {
		t.Fatalf("left in in/ %v, outbox %v", in, ob)
	}

	// The certificate: the SP's answer, for the device's key, naming the
	// assigned ID, chaining to the root.
	r := readResult(t, cfg, "Sdev1")
	leaf, err := ca.ParseCertsPEM([]byte(r.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	chain, _ := ca.ParseCertsPEM([]byte(r.Chain))
	roots := x509.NewCertPool()
	roots.AddCert(p.root)
	inter := x509.NewCertPool()
	for _, c := range chain {
		inter.AddCert(c)
	}
	if _, err := leaf[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if !leaf[0].PublicKey.(*ecdsa.PublicKey).Equal(&devKey.PublicKey) || leaf[0].Subject.CommonName != "Sdev1" ||
		len(leaf[0].URIs) != 1 || leaf[0].URIs[0].String() != "https://sp.example/Sdev1" {
		t.Fatalf("certificate: CN %q URIs %v", leaf[0].Subject.CommonName, leaf[0].URIs)
	}
	if r.CredentialID != "c-Sdev1" || r.TrustAnchor == "" || len(chain) != 1 {
		t.Fatalf("result: %+v", r)
	}
	if r := readResult(t, cfg, "/cse-3"); r.CredentialID != "c-/cse-3" {
		t.Fatalf("CSE-ID result: %+v", r)
	}

	// The key: 32 bytes drawn by the OBS, under the IDs the SP answered.
	k := readResult(t, cfg, "Sdev2")
	if k.Key == nil || len(k.Key.Value) != 32 || !strings.HasPrefix(k.Key.KeyID, "k") || !strings.HasPrefix(k.Key.KeID, "e") ||
		k.CredentialID != "c-Sdev2" || k.Key.NotAfter.Before(time.Now().Add(300*24*time.Hour)) {
		t.Fatalf("key result: %+v", k)
	}
	var sent *client.ForwardItem
	for _, it := range sp.items() {
		if it.AssignedID == "Sdev2" {
			sent = &it
		}
	}
	if sent == nil || sent.Token != "tok-Sdev2" || string(sent.Key.Value) != string(k.Key.Value) || sent.RequestID != k.RequestID || len(sent.RequestID) != 64 ||
		sent.Key.KeyID != "" || sent.Key.KeID != "" || !sent.Key.NotAfter.IsZero() {
		t.Fatalf("forwarded key item (the SP names the key and bounds its life): %+v", sent)
	}
}

func TestRefusedAndTransient(t *testing.T) {
	p := newPKI(t)
	sp := newFakeSP(t, p)
	sp.answer = func(n int, items []client.ForwardItem) (int, []client.ForwardResult) {
		if n == 1 {
			return 503, nil
		}
		res := recordAll(t, p, items)
		for i, it := range items {
			switch {
			case it.AssignedID == "Sbad":
				res[i] = client.ForwardResult{Index: i, Status: "refused", Code: "token_mismatch", Message: "another OBF's token"}
			case it.AssignedID == "Sflaky" && n == 2:
				res[i] = client.ForwardResult{Index: i, Status: "refused", Code: "registry_unavailable"}
			case it.AssignedID == "Sflaky":
				res[i].Status = "replayed"
			}
		}
		return 200, res
	}
	o, cfg := newTestOBS(t, p, sp.URL, "")
	dropJob(t, cfg, keyJob("Sgood"))
	dropJob(t, cfg, keyJob("Sbad"))
	dropJob(t, cfg, keyJob("Sflaky"))
	badJob := dropJob(t, cfg, map[string]any{"bundle": bundle("Snocsr"), "csr": "not pem"})
	expired := bundle("Sold")
	expired["expiresAt"] = time.Now().Add(-time.Minute)
	dropJob(t, cfg, map[string]any{"bundle": expired, "key": map[string]any{"suid": 22, "targetIds": []string{"x"}}})

	sum, err := o.Run(context.Background(), true)
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("run with refusals: %v", err)
	}
	if sum.Provisioned != 3 || sum.Rejected != 2 || sum.Recorded != 1 || sum.Replayed != 1 || sum.Refused != 1 || sum.Pending != 0 {
		t.Fatalf("summary: %s", sum)
	}
	if len(sp.requests) != 3 {
		t.Fatalf("%d requests, want 3 (503, then a transient refusal, then the retry)", len(sp.requests))
	}
	refused := files(t, cfg, DirRefused)
	if len(refused) != 3 {
		t.Fatalf("refused/: %v", refused)
	}
	// The refused credential never reached out/.
	if _, err := os.Stat(filepath.Join(cfg.Spool, DirOut, outName("Sbad"))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("out/ holds the refused credential: %v", err)
	}
	readResult(t, cfg, "Sgood")
	codes := map[string]Refusal{}
	for _, name := range refused {
		if strings.HasSuffix(name, ".result.json") {
			continue
		}
		raw, _ := os.ReadFile(filepath.Join(cfg.Spool, DirRefused, name))
		var r Refusal
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatal(err)
		}
		codes[r.Code] = r
	}
	if r := codes["token_mismatch"]; r.Source != "sp" || r.Item == nil || r.Item.AssignedID != "Sbad" || r.Message == "" {
		t.Fatalf("SP refusal: %+v", r)
	}
	if r := codes["bad_csr"]; r.Source != "obs" || r.JobFile != badJob || !strings.Contains(r.Job, "Snocsr") {
		t.Fatalf("OBS refusal: %+v", r)
	}
	if r := codes["token_expired"]; r.Source != "obs" {
		t.Fatalf("expired bundle: %+v", codes)
	}
}

func TestUnreachableThenRecover(t *testing.T) {
	p := newPKI(t)
	sp := newFakeSP(t, p)
	// A closed port: nothing answers.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "https://" + ln.Addr().String()
	ln.Close()
	o, cfg := newTestOBS(t, p, dead, "retry_timeout: 300ms\n")
	cj, _ := certJob(t, "Sdev1")
	job := dropJob(t, cfg, cj)
	sum, err := o.Run(context.Background(), true)
	if !errors.Is(err, ErrIncomplete) || sum.Pending != 1 || sum.Provisioned != 1 {
		t.Fatalf("unreachable SP: %v %s", err, sum)
	}
	if _, err := os.Stat(filepath.Join(cfg.Spool, DirOut, outName("Sdev1"))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("out/ holds a result the SP never answered: %v", err)
	}
	rec := files(t, cfg, DirOutbox)
	first, _ := os.ReadFile(filepath.Join(cfg.Spool, DirOutbox, rec[0]))

	// A crash between the outbox record and the job's removal: the job is
	// back. The next run finishes it from the record (same item) and sends
	// it once.
	raw, _ := json.Marshal(cj)
	if err := os.WriteFile(filepath.Join(cfg.Spool, DirIn, job), raw, 0o600); err != nil {
		t.Fatal(err)
	}

	o2, err := New(withURL(cfg, sp.URL), Keys{Client: p.clientKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum, err = o2.Run(context.Background(), true)
	if err != nil || sum.Recorded != 1 || sum.Pending != 0 || sum.JobsLeft != 0 {
		t.Fatalf("second run: %v %s", err, sum)
	}
	var firstRec outboxRecord
	if err := json.Unmarshal(first, &firstRec); err != nil {
		t.Fatal(err)
	}
	again := readResult(t, cfg, "Sdev1")
	if again.RequestID != firstRec.Item.RequestID || again.Certificate == "" {
		t.Fatal("the recovered job was provisioned afresh")
	}
	if items := sp.items(); len(items) != 1 || items[0].RequestID != firstRec.Item.RequestID || items[0].CSR != firstRec.Item.CSR {
		t.Fatalf("sent %d items", len(items))
	}
}

func withURL(cfg Config, u string) Config {
	cfg.SPURL = u
	return cfg
}

func TestBatchSizeAndAuthErrors(t *testing.T) {
	p := newPKI(t)
	sp := newFakeSP(t, p)
	sp.answer = func(_ int, items []client.ForwardItem) (int, []client.ForwardResult) {
		if len(items) > 2 {
			return 413, nil
		}
		return 200, recordAll(t, p, items)
	}
	o, cfg := newTestOBS(t, p, sp.URL, "batch_size: 5\n")
	for i := range 5 {
		dropJob(t, cfg, keyJob(fmt.Sprintf("Sk%d", i)))
	}
	sum, err := o.Run(context.Background(), true)
	if err != nil || sum.Recorded != 5 {
		t.Fatalf("halving batches: %v %s", err, sum)
	}
	for _, r := range sp.requests[1:] {
		if len(r) > 2 {
			t.Fatalf("batch of %d after 413", len(r))
		}
	}

	// 403: this OBS is not trusted (any more). Not retried, items kept.
	calls := 0
	sp.answer = func(int, []client.ForwardItem) (int, []client.ForwardResult) { calls++; return 403, nil }
	dropJob(t, cfg, keyJob("Sk9"))
	sum, err = o.Run(context.Background(), true)
	if !errors.Is(err, ErrIncomplete) || calls != 1 || sum.Pending != 1 {
		t.Fatalf("403: %v, %d calls, %s", err, calls, sum)
	}
}

func TestDaemonStopsOnCancel(t *testing.T) {
	p := newPKI(t)
	sp := newFakeSP(t, p)
	o, cfg := newTestOBS(t, p, sp.URL, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Summary)
	go func() {
		s, _ := o.Run(ctx, false)
		done <- s
	}()
	dropJob(t, cfg, keyJob("Sd1"))
	// Wait until the SP has the item and the OBS has cleared its outbox:
	// cancelling between the two would (rightly) leave it pending.
	outbox := filepath.Join(cfg.Spool, "outbox")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		entries, _ := os.ReadDir(outbox)
		if len(sp.items()) > 0 && len(entries) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	s := <-done
	if s.Recorded != 1 || s.Pending != 0 {
		t.Fatalf("daemon: %s", s)
	}
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(text string) string {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg, err := Load(write("spool: s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BatchSize != 100 || cfg.Spool != filepath.Join(dir, "s") || cfg.HSM.PINFile != filepath.Join(dir, "hsm", "hsm-pin") ||
		cfg.HSM.SoftHSMConf != filepath.Join(dir, "hsm", "softhsm2.conf") || cfg.KeyLifetime != 0 {
		t.Fatalf("defaults: %+v", cfg)
	}
	if err := cfg.CheckRun(); err == nil {
		t.Fatal("run without SP settings")
	}
	for text, want := range map[string]string{
		"spol: s\n":                     "field spol not found",
		"batch_size: 1001\n":            "batch_size",
		"batch_size: 0\n":               "batch_size",
		"sub_ca_cert: s.pem\n":          "field sub_ca_cert not found",
		"key_lifetime: -1h\n":           "key_lifetime",
		"client_key: pkcs11:object=a\n": "client_key",
		"hsm: {pin_file: /x}\n":         "embedded token keeps them",
		"log: {level: loud}\n":          "log.level",
	} {
		if _, err := Load(write(text)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
	if _, err := Load(write("hsm: {embedded: false, pin_file: /x, token_label: t}\n")); err != nil {
		t.Errorf("a real HSM: %v", err)
	}
}

// A job that is not JSON may still be being written (a line that copies
// files straight into in/): it is left alone until it settles, then refused.
func TestHalfWrittenJob(t *testing.T) {
	p := newPKI(t)
	sp := newFakeSP(t, p)
	o, cfg := newTestOBS(t, p, sp.URL, "")
	if err := os.WriteFile(filepath.Join(cfg.Spool, DirIn, "partial.json"), []byte(`{"bundle": {"tok`), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, err := o.Run(context.Background(), true)
	if !errors.Is(err, ErrIncomplete) || sum.JobsLeft != 1 || sum.Rejected != 0 {
		t.Fatalf("fresh partial job: %v %s", err, sum)
	}
	o.now = func() time.Time { return time.Now().Add(time.Minute) }
	sum, err = o.Run(context.Background(), true)
	if !errors.Is(err, ErrIncomplete) || sum.JobsLeft != 0 || sum.Rejected != 1 {
		t.Fatalf("settled partial job: %v %s", err, sum)
	}
}
