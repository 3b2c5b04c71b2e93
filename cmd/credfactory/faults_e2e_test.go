package main

// Faults, tested rather than promised: the real binary is killed
// mid-run, or its HSM token taken away, and the tests check what clients
// and the registry see afterwards.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/hsm/softhsm/softhsmtest"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/mef"
	"github.com/credfactory/credfactory/store"
)

// initSP initialises a data directory (with the given environment, e.g. a
// PostgreSQL store URL) without serving it: the fault tests start, kill and
// restart serve themselves.
func initSP(t *testing.T, env ...string) *sp {
	t.Helper()
	s := &sp{t: t, dir: t.TempDir(), env: append(cleanEnv(), env...), logs: &lockedBuffer{}, stop: func() {}}
	s.initOut = s.cli("init")
	anchor, err := os.ReadFile(filepath.Join(s.dir, "trust-anchor.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s.roots = x509.NewCertPool()
	s.roots.AppendCertsFromPEM(anchor)
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("serve log:\n%s", s.logs.String())
		}
	})
	return s
}

// serving is one run of credfactory serve.
type serving struct {
	cmd    *exec.Cmd
	exited chan error
}

// serve starts credfactory serve on s's data directory at addr and waits
// until /readyz answers 200; s.base and s.stop then belong to this run.
func (s *sp) serve(addr string) *serving {
	s.t.Helper()
	cmd := exec.Command(bin, "serve", "--data-dir", s.dir, "--listen", addr)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	run := &serving{cmd: cmd, exited: make(chan error, 1)}
	go func() { run.exited <- cmd.Wait() }()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-run.exited:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-run.exited
			}
		})
	}
	_, port, _ := net.SplitHostPort(addr)
	s.base = "https://localhost:" + port
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := s.client(nil).Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return run
			}
		}
		select {
		case err := <-run.exited:
			s.t.Fatalf("serve exited: %v\n%s", err, s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("serve not ready: %v\n%s", err, s.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill ends the run with SIGKILL: no shutdown, no flush, no deferred code.
func (r *serving) kill(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-r.exited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("serve did not die of SIGKILL: %v", err)
	}
}

// faultJob is one device's enrolment as its client sees it: the request it
// sends (again, unchanged, on a retry) and what it got.
type faultJob struct {
	device string
	bundle client.Bundle
	// Certificate jobs send csr over EST; key jobs ask for a Kpsa (SUID 22)
	// with requestID.
	csr       []byte
	requestID string

	// What the client was answered, at most once per phase.
	cert   *x509.Certificate
	key    client.KeyAnswer
	got    bool
	err    error
	replay bool
}

func (j *faultJob) isCert() bool { return j.csr != nil }

// credentialID is the registry ID of what the client holds.
func (j *faultJob) credentialID() string {
	if j.isCert() {
		fp := sha256.Sum256(j.cert.Raw)
		return kdf.CredentialID(mef.CertCredentialType(j.bundle.AssignedID), hex.EncodeToString(fp[:]))
	}
	return j.key.CredentialID
}

// do sends the job's request once and records the answer.
func (j *faultJob) do(ctx context.Context, conn *client.Conn) {
	j.got, j.err, j.replay = false, nil, false
	if j.isCert() {
		certs, err := conn.ESTEnroll(ctx, j.csr, false)
		if err == nil {
			j.cert, j.got = certs[0], true
		}
		j.err = err
		return
	}
	k, err := conn.EnrolKey(ctx, j.bundle.Token, j.bundle.AssignedID, j.requestID, int(kdf.SUIDRSPFSAEF), nil)
	if err == nil {
		j.key, j.got, j.replay = k, true, k.Replayed
	}
	j.err = err
}

// faultFleet pre-enrols n devices for a subscriber and gets each an
// enrolment bundle through the portal API; even devices enrol for a
// certificate, odd ones for a shared key.
func faultFleet(t *testing.T, s *sp, n int) []*faultJob {
	t.Helper()
	acme := s.stakeholder("acme", "manufacturer")
	alice := s.stakeholder("alice", "subscriber")
	var csv strings.Builder
	csv.WriteString("deviceId,claimCode\n")
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%d", i)
		fmt.Fprintf(&csv, "%s,label-%d\n", ids[i], i)
	}
	if status, body := s.call(acme, "POST", "/api/v1/devices", "text/csv", []byte(csv.String())); status != 200 || body["accepted"] != float64(n) {
		t.Fatalf("upload: %d %v", status, body)
	}
	if status, body := s.call(acme, "POST", "/api/v1/handovers", "application/json", mustJSON(map[string]any{"subscriber": "alice", "deviceIds": ids})); status != 200 {
		t.Fatalf("hand over: %d %v", status, body)
	}
	jobs := make([]*faultJob, n)
	for i, id := range ids {
		status, body := s.call(alice, "POST", "/api/v1/devices/"+id+"/enrolments", "application/json", mustJSON(map[string]any{"proof": map[string]any{"claimCode": fmt.Sprintf("label-%d", i)}}))
		if status != 201 {
			t.Fatalf("enrolment bundle for %s: %d %v", id, status, body)
		}
		j := &faultJob{device: id}
		if err := json.Unmarshal(mustJSON(body), &j.bundle); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			csr, err := client.CSR(key, j.bundle.AssignedID, j.bundle.Token)
			if err != nil {
				t.Fatal(err)
			}
			j.csr = csr
		} else {
			j.requestID = randomText("req")
		}
		jobs[i] = j
	}
	return jobs
}

// TestFaultKilledDuringEnrolments kills credfactory serve with SIGKILL while
// 32 clients enrol (EST certificates and shared keys), restarts it on the
// same data directory and store, and checks that the crash lost nothing a
// client was told and left no token half-redeemed; then every client sends
// its request again, unchanged, and gets its own credential back: the one
// it already held if it had been answered, never an error and never a
// second credential.
func TestFaultKilledDuringEnrolments(t *testing.T) {
	onBothBackends(t, func(t *testing.T, url string, env []string) {
		s := initSP(t, env...)
		if url == "" {
			url = "sqlite://" + filepath.Join(s.dir, "registry.db")
		}
		killedDuringEnrolments(t, s, url)
	})
}

func killedDuringEnrolments(t *testing.T, s *sp, storeURL string) {
	const devices, clients = 96, 32
	addr := freePort(t)
	run := s.serve(addr)
	jobs := faultFleet(t, s, devices)
	anchor := parsePEMCerts(t, readFile(t, filepath.Join(s.dir, "trust-anchor.pem")))
	conn := client.NewConn(s.base, anchor, nil)
	ctx := t.Context()

	// Phase 1: 32 clients enrol; the server is killed once a quarter of
	// the devices have their credential, with the other clients in flight.
	queue := make(chan *faultJob, len(jobs))
	for _, j := range jobs {
		queue <- j
	}
	close(queue)
	var answered atomic.Int32
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queue {
				j.do(ctx, conn)
				if j.got {
					answered.Add(1)
				}
			}
		}()
	}
	for answered.Load() < devices/4 {
		time.Sleep(time.Millisecond)
	}
	run.kill(t)
	wg.Wait()
	first := map[*faultJob]string{} // credential IDs the clients were answered
	for _, j := range jobs {
		if j.got {
			first[j] = j.credentialID()
			continue
		}
		// Refusals must not happen: only the lost connection may fail a
		// request (or a 503, which says retry).
		var e *client.Error
		if errors.As(j.err, &e) && e.Status != 503 && !(j.isCert() && e.Status == 202) {
			t.Errorf("%s refused before the kill: %v", j.device, j.err)
		}
	}
	t.Logf("before the kill: %d of %d clients answered", len(first), len(jobs))
	if len(first) == len(jobs) {
		t.Fatal("every enrolment finished before the kill: the test killed nothing in flight")
	}

	// What the crash left, read straight from the registry before the
	// restart: every answered credential is recorded and active, and each
	// token is either unused (and nothing recorded for it) or redeemed
	// with exactly the one credential recorded for it.
	checkRegistry(t, storeURL, jobs, first)

	// Phase 2: restart; every client retries its request unchanged.
	conn.HTTP.CloseIdleConnections()
	s.serve(addr)
	retry := make(chan *faultJob, len(jobs))
	for _, j := range jobs {
		retry <- j
	}
	close(retry)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range retry {
				// Only a 202/503/429 or a connection error is retried (the
				// old connections died with the server).
				for attempt := 0; attempt < 20; attempt++ {
					if j.do(ctx, conn); j.got || !client.Retryable(j.err) {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	for _, j := range jobs {
		if !j.got {
			t.Errorf("%s: retry after the restart failed: %v", j.device, j.err)
			continue
		}
		if id, ok := first[j]; ok {
			if got := j.credentialID(); got != id {
				t.Errorf("%s: the retry got credential %s, the client already held %s", j.device, got, id)
			}
			if !j.isCert() && !j.replay {
				t.Errorf("%s: the key retry was not answered as a replay", j.device)
			}
		}
	}
	// Nothing was issued twice: the registry holds each client's one
	// credential, as the portal shows it.
	alice := strings.TrimSpace(s.cli("admin", "create-api-key", "--stakeholder", "alice"))
	for _, j := range jobs {
		if !j.got {
			continue
		}
		status, body := s.call(alice, "GET", "/api/v1/devices/"+j.device, "", nil)
		creds, _ := body["credentials"].([]any)
		if status != 200 || len(creds) != 1 || str(creds[0], "credentialId") != j.credentialID() || str(creds[0], "status") != "active" {
			t.Errorf("%s: portal shows %d %v, want the one active credential %s", j.device, status, body["credentials"], j.credentialID())
		}
	}
	s.stop()
	checkRegistry(t, storeURL, jobs, nil)
}

// checkRegistry opens the registry directly (the server is not running) and
// checks every job's token and credentials: a redeemed token names a
// recorded credential that was issued for it, an unredeemed one has none,
// no device holds more than one credential, and each credential in answered
// is recorded and active. With answered nil, every token must be redeemed.
func checkRegistry(t *testing.T, url string, jobs []*faultJob, answered map[*faultJob]string) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatalf("open the registry: %v", err)
	}
	defer st.Close()
	redeemed := 0
	for _, j := range jobs {
		enrolments, err := st.Enrolments(ctx, j.device)
		if err != nil || len(enrolments) != 1 {
			t.Fatalf("%s: enrolments %v, %v", j.device, enrolments, err)
		}
		e := enrolments[0]
		creds, err := st.Credentials(ctx, j.bundle.AssignedID)
		if err != nil {
			t.Fatal(err)
		}
		switch e.State {
		case store.EnrolmentRedeemed:
			redeemed++
			if e.CredentialID == nil || len(creds) != 1 || creds[0].ID != *e.CredentialID || creds[0].Status != store.StatusActive {
				t.Errorf("%s: token redeemed for %q, registry holds %d credentials: half-redeemed", j.device, deref(e.CredentialID), len(creds))
			}
		case store.EnrolmentIssued:
			if e.CredentialID != nil || len(creds) != 0 {
				t.Errorf("%s: token unused but %d credentials recorded", j.device, len(creds))
			}
		default:
			t.Errorf("%s: token in state %s", j.device, e.State)
		}
		if id, ok := answered[j]; ok && (e.CredentialID == nil || *e.CredentialID != id) {
			t.Errorf("%s: the client was answered %s, the registry lost it (token: %s %q)", j.device, id, e.State, deref(e.CredentialID))
		}
	}
	if answered == nil && redeemed != len(jobs) {
		t.Errorf("%d of %d tokens redeemed after every client retried", redeemed, len(jobs))
	}
	if answered != nil {
		// Recorded, but the answer died with the server: the retries
		// after the restart must replay these.
		t.Logf("registry: %d of %d tokens redeemed, %d of them never answered", redeemed, len(jobs), redeemed-len(answered))
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// TestFaultHSMOutageUnderLoad takes SoftHSM2's token away from a running
// server while clients enrol, by moving the token's directory out of the
// token store (what SoftHSM2 does then: see hsm.TestTokenStorageGoneAndBack),
// and puts it back. Meanwhile requests that need the HSM fail with 503 and
// hsm_unavailable (never a 500), /readyz says unready, and afterwards the
// same server, not restarted, serves again and every client's retry of its
// unchanged request succeeds.
//
// With session keys (the default) SoftHSM2 keeps signing from memory until
// something asks the token itself: here /readyz, which the test polls as a
// load balancer would. With token keys every signature notices at once.
//
// The clients keep their TLS connections: the server's TLS key is in the
// same HSM, so a new handshake fails during the outage (a client sees a
// connection error, not a 503); counted, and allowed only then.
func TestFaultHSMOutageUnderLoad(t *testing.T) {
	for _, c := range []struct {
		name string
		env  []string
	}{
		{"session_keys", nil},
		{"token_keys", []string{"CREDFACTORY_HSM_SESSION_KEYS=false"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := initSP(t, c.env...)
			run := s.serve(freePort(t))
			hsmOutage(t, s, run)
		})
	}
}

func hsmOutage(t *testing.T, s *sp, run *serving) {
	const devices, workers = 161, 4
	jobs := faultFleet(t, s, devices)
	spare := jobs[len(jobs)-1] // asks the portal for a bundle during the outage
	jobs = jobs[:len(jobs)-1]
	anchor := parsePEMCerts(t, readFile(t, filepath.Join(s.dir, "trust-anchor.pem")))
	conn := client.NewConn(s.base, anchor, nil)
	ops := s.client(nil) // the operator's and the load balancer's connection
	alice := strings.TrimSpace(s.cli("admin", "create-api-key", "--stakeholder", "alice"))
	if status, _ := s.callWith(ops, alice, "GET", "/api/v1/devices/"+spare.device, "", nil); status != 200 {
		t.Fatalf("device: %d", status)
	}
	ready := func() (int, map[string]any) { return s.callWith(ops, "", "GET", "/readyz", "", nil) }

	var (
		mu        sync.Mutex
		statuses  = map[string]int{} // "503 hsm_unavailable", "conn", ...
		ok        atomic.Int32
		failed    atomic.Int32
		outage    atomic.Bool
		connLost  atomic.Int32
		unexpect  []string
		queue     = make(chan *faultJob, len(jobs))
		ctx       = t.Context()
		wg        sync.WaitGroup
		pace      = 25 * time.Millisecond
		completed = make([]*faultJob, 0, len(jobs))
	)
	for _, j := range jobs {
		queue <- j
	}
	close(queue)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range queue {
				for {
					time.Sleep(pace) // a factory line's pace, so the run spans the outage
					j.do(ctx, conn)
					var e *client.Error
					mu.Lock()
					switch {
					case j.got:
						statuses["200"]++
						completed = append(completed, j)
					case errors.As(j.err, &e):
						statuses[fmt.Sprintf("%d %s", e.Status, e.Code)]++
						// EST answers an enrolment that waits on the HSM
						// 202 Accepted (RFC 7030 §4.2.3), JSON 503.
						if want := map[bool]int{true: 202, false: 503}[j.isCert()]; e.Status != want || e.Code != "hsm_unavailable" {
							unexpect = append(unexpect, fmt.Sprintf("%s: %v", j.device, j.err))
						}
					default:
						statuses["conn"]++
						if !outage.Load() {
							unexpect = append(unexpect, fmt.Sprintf("%s: connection error outside the outage: %v", j.device, j.err))
						}
					}
					mu.Unlock()
					if j.got {
						ok.Add(1)
						break
					}
					if j.err != nil && ctx.Err() != nil {
						return
					}
					failed.Add(1)
					var ce *client.Error
					if !errors.As(j.err, &ce) {
						connLost.Add(1)
					}
				}
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("timed out waiting for %s; answers so far %v", what, statuses)
			}
			select {
			case err := <-run.exited:
				t.Fatalf("serve exited: %v", err)
			default:
			}
		}
	}

	waitFor("enrolments before the outage", func() bool { return ok.Load() >= 10 })
	away, back := takeTokenAway(t, s.dir)
	outage.Store(true)
	away()
	failedBefore := failed.Load()
	waitFor("/readyz to say unready", func() bool {
		status, body := ready()
		return status == 503 && str(body, "checks", "hsm") == "unavailable"
	})
	waitFor("enrolments to fail", func() bool { return failed.Load() >= failedBefore+5 })
	// The portal needs the HSM for a bundle (the claim code's HMAC).
	status, hdr, raw := s.send(ops, alice, "POST", "/api/v1/devices/"+spare.device+"/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "label-160"}}))
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	if status != 503 || errCode(body) != "hsm_unavailable" || hdr.Get("Retry-After") == "" {
		t.Errorf("portal bundle during the outage: %d %v Retry-After %q, want 503 hsm_unavailable with Retry-After", status, body, hdr.Get("Retry-After"))
	}
	// EST, as RFC 7030 §4.2.3 words it: the enrolment is pending, retry
	// after Retry-After (the fleet's clients do, and all complete below).
	status, hdr, raw = s.send(ops, "", "POST", "/.well-known/est/simpleenroll", "application/pkcs10",
		[]byte(base64.StdEncoding.EncodeToString(spare.csr)))
	if status != 202 || !strings.HasPrefix(string(raw), "hsm_unavailable:") || hdr.Get("Retry-After") == "" {
		t.Errorf("EST during the outage: %d %q Retry-After %q, want 202 hsm_unavailable with Retry-After", status, raw, hdr.Get("Retry-After"))
	}
	okBefore := ok.Load()

	back()
	waitFor("/readyz to recover", func() bool { status, _ := ready(); return status == 200 })
	outage.Store(false)
	waitFor("enrolments after the outage", func() bool { return ok.Load() >= okBefore+10 })
	if status, body := s.callWith(ops, alice, "POST", "/api/v1/devices/"+spare.device+"/enrolments", "application/json",
		mustJSON(map[string]any{"proof": map[string]any{"claimCode": "label-160"}})); status != 201 {
		t.Errorf("portal bundle after the outage: %d %v", status, body)
	}
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("answers: %v (connection errors during the outage: %d)", statuses, connLost.Load())
	for _, u := range unexpect {
		t.Error(u)
	}
	if statuses["503 hsm_unavailable"]+statuses["202 hsm_unavailable"] == 0 {
		t.Error("no request saw the outage")
	}
	if len(completed) != len(jobs) {
		t.Errorf("%d of %d enrolments completed after the outage", len(completed), len(jobs))
	}
	select {
	case err := <-run.exited:
		t.Fatalf("serve exited: %v", err)
	default:
	}
}

// takeTokenAway returns functions that hide the SP's SoftHSM2 token from
// the running server and bring it back; a failed test still gets it back.
func takeTokenAway(t *testing.T, dataDir string) (away, back func()) {
	t.Helper()
	o, err := softhsmtest.NewOutage(filepath.Join(dataDir, "hsm"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Back() })
	return func() { noErr(t, o.Away()) }, func() { noErr(t, o.Back()) }
}

func noErr(t *testing.T, err error) {
	if err != nil {
		t.Error(err)
	}
}
