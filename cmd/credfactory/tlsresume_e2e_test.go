package main

import (
	"crypto/tls"
	"net"
	"net/http"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestSessionResumesOnAnotherReplica: two serve processes on one data
// directory (one registry, one HSM token: two replicas behind a load
// balancer) open each other's session tickets, so a client that comes back
// resumes whichever replica it reaches (package tlsticket); before, each
// process sealed tickets with random keys of its own.
func TestSessionResumesOnAnotherReplica(t *testing.T) {
	a := startSP(t)
	addr := freePort(t)
	cmd := exec.Command(bin, "serve", "--data-dir", a.dir, "--listen", addr)
	cmd.Env = append(a.env, "CREDFACTORY_SERVER_OPS_LISTEN="+freePort(t))
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("second replica's log:\n%s", logs.String())
		}
	})
	_, port, _ := net.SplitHostPort(addr)
	second := "https://localhost:" + port

	cache := tls.NewLRUClientSessionCache(4)
	get := func(base string) (resumed bool, err error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{RootCAs: a.roots, ClientSessionCache: cache}}}
		resp, err := c.Get(base + "/readyz")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, &statusError{resp.StatusCode}
		}
		return resp.TLS.DidResume, nil
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: a.roots}}}).Get(second + "/readyz"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("second replica not ready: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if resumed, err := get(a.base); err != nil || resumed {
		t.Fatalf("first connection: resumed %v, %v", resumed, err)
	}
	if resumed, err := get(second); err != nil || !resumed {
		t.Fatalf("the other replica did not resume the session: resumed %v, %v", resumed, err)
	}
	if resumed, err := get(a.base); err != nil || !resumed {
		t.Fatalf("back on the first replica: resumed %v, %v", resumed, err)
	}
}

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }
