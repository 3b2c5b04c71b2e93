package mef_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credfactory/credfactory/ca/catest"
	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/hsm/softhsm/softhsmtest"
	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/maf"
	"github.com/credfactory/credfactory/mef"
	"github.com/credfactory/credfactory/server"
	"github.com/credfactory/credfactory/store"
	"github.com/credfactory/credfactory/store/storetest"
)

const (
	masterURI = "pkcs11:object=mef-test-kdf;type=secret-key"
	kekURI    = "pkcs11:object=mef-test-kek;type=secret-key"
	mefFQDN   = "mef.sp.example"
)

var (
	master *hsm.HMACKey
	kek    *hsm.AEADKey
)

// TestMain gives the package a SoftHSM token with the KDF master key and
// the KEK: shared keys are sealed and derived by the real HSM here.
func TestMain(m *testing.M) {
	os.Exit(softhsmtest.Main(m, "mef-test", masterURI, kekURI, func(tok *softhsmtest.KDFToken) { master, kek = tok.Master, tok.KEK }))
}

// keyEnv is an MEF and its MAF registry on a real store and SoftHSM,
// served over real TLS on loopback with the front end's TLS policy.
type keyEnv struct {
	t      testing.TB
	st     *store.Store
	reg    *maf.Registry
	m      *mef.MEF
	base   string
	roots  *x509.CertPool
	anchor *x509.Certificate
	rootPE string // the root's PEM file, for curl
	n      int
}

func newKeyEnv(t testing.TB, url string) *keyEnv {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	p := catest.New(t)
	reg := maf.New(st, nil, master, kek)
	m := mef.New(mef.Config{FQDN: mefFQDN, MAFFQDN: "maf.sp.example", SPDomain: "sp.example"}, st, reg, p.WithClock(t, time.Now), p.Root, nil, master, nil, nil)
	cert := p.ServerCert(t)
	srv := server.New(server.Options{Listen: "127.0.0.1:0", MaxBodyBytes: 1 << 16,
		TLS: server.TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil })})
	srv.Register(m.Routes()...)
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	roots := x509.NewCertPool()
	roots.AddCert(p.Root)
	rootPEM := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(rootPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Root.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &keyEnv{t: t, st: st, reg: reg, m: m, base: "https://localhost:" + strings.Split(srv.Addr().String(), ":")[1],
		roots: roots, anchor: p.Root, rootPE: rootPEM}
}

// token pre-enrols a device and returns its enrolment token and assigned ID.
func (e *keyEnv) token() (token, assignedID string) {
	e.t.Helper()
	e.n++
	device := fmt.Sprintf("dev-%d-%d", e.n, time.Now().UnixNano())
	token = device + "-token-0123456789"
	h := sha256.Sum256([]byte(token))
	now := time.Now()
	if _, err := e.st.UpsertDevices(context.Background(), "maker", []store.Device{{ID: device}}, now); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.CreateEnrolment(context.Background(), store.Enrolment{TokenHash: h[:], DeviceID: device, AssignedID: "S" + device,
		StakeholderID: "stk", Tenant: "tenant-1", Mode: store.ModeUntrusted, ExpiresAt: now.Add(time.Hour), CreatedAt: now}); err != nil {
		e.t.Fatal(err)
	}
	return token, "S" + device
}

// unspent fails the test if the token was redeemed.
func (e *keyEnv) unspent(token string) {
	e.t.Helper()
	h := sha256.Sum256([]byte(token))
	en, err := e.st.Enrolment(context.Background(), h[:])
	if err != nil {
		e.t.Fatal(err)
	}
	if en.RedeemedAt != nil || en.CredentialID != nil {
		e.t.Fatalf("token spent: %+v", en)
	}
}

func (e *keyEnv) conn() *client.Conn {
	return client.NewConn(e.base, []*x509.Certificate{e.anchor}, nil)
}

func requestID() string { return fmt.Sprintf("req-%032d", time.Now().UnixNano()) }

// TestExporterKeysEndToEnd: over real TLS, the keys the device derives from
// its own session equal what each Target fetches from the MAF (re-derived
// in SoftHSM from the sealed Ke); two Targets of one Kuc get different
// keys; the answer on the wire carries no key; a Target not listed gets
// nothing.
func TestExporterKeysEndToEnd(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		e := newKeyEnv(t, url)
		targets := []string{"in-cse.sp.example", "mn-cse.sp.example"}

		// The raw exchange, with the export taken by hand: nothing but
		// identifiers crosses the wire.
		token, aid := e.token()
		var export []byte
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			st := info.Conn.(*tls.Conn).ConnectionState()
			export, _ = st.ExportKeyingMaterial("EXPORTER-oneM2M-Bootstrap", nil, 48)
		}}
		body, _ := json.Marshal(map[string]any{"token": token, "assignedId": aid, "requestId": requestID(),
			"key": map[string]any{"suid": 23, "targetIds": targets}})
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), "POST", e.base+"/mef/v1/enrol", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}}}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("enrol: %d %s", resp.StatusCode, raw)
		}
		var ans map[string]any
		if err := json.Unmarshal(raw, &ans); err != nil {
			t.Fatal(err)
		}
		if _, ok := ans["key"]; ok || ans["targetKeys"] != nil || ans["mode"] != "exporter" {
			t.Fatalf("exporter answer carries a key or another mode: %s", raw)
		}
		if len(export) != 48 {
			t.Fatalf("export %x", export)
		}
		keID := hex.EncodeToString(export[:16]) + "@" + mefFQDN
		if ans["keId"] != keID || ans["keyId"] != keID || ans["credentialId"] != "13-"+keID || ans["enroleeId"] != aid {
			t.Fatalf("identifiers %s, want KeID %s from the session", raw, keID)
		}
		ke := export[16:]
		var fetched [][]byte
		for _, tgt := range targets {
			got, err := e.reg.Fetch(ctx, keID, kdf.SUIDRSPFESPrim, []string{tgt})
			if err != nil {
				t.Fatalf("%s fetches: %v", tgt, err)
			}
			if want := kdf.Kuc(ke, 23, tgt); !bytes.Equal(got.Key, want) {
				t.Fatalf("%s fetched %x, the device derives %x", tgt, got.Key, want)
			}
			fetched = append(fetched, got.Key)
		}
		if bytes.Equal(fetched[0], fetched[1]) {
			t.Fatal("two Targets fetched the same Kuc")
		}
		if _, err := e.reg.Fetch(ctx, keID, kdf.SUIDRSPFESPrim, []string{"rogue-cse.sp.example", aid}); !errors.Is(err, maf.ErrNotAuthorised) {
			t.Fatalf("unlisted Target: %v, want ErrNotAuthorised", err)
		}

		// The device library, for every usage, over TLS 1.3 and 1.2 (with
		// the Extended Master Secret, which Go always offers).
		for _, c := range []struct {
			suid    int
			targets []string
			maxTLS  uint16
		}{
			{21, nil, tls.VersionTLS13},
			{22, []string{"in-cse.sp.example"}, tls.VersionTLS13},
			{24, targets, tls.VersionTLS13},
			{25, targets, tls.VersionTLS12},
			{22, []string{"in-cse.sp.example"}, tls.VersionTLS12},
		} {
			token, aid := e.token()
			conn := e.conn()
			conn.HTTP.Transport.(*http.Transport).TLSClientConfig.MaxVersion = c.maxTLS
			k, err := conn.EnrolKeyWith(ctx, client.KeyRequest{Token: token, AssignedID: aid, RequestID: requestID(), SUID: c.suid, TargetIDs: c.targets})
			if err != nil {
				t.Fatalf("SUID %d over TLS %x: %v", c.suid, c.maxTLS, err)
			}
			if len(k.Ke) != 32 || k.Mode != "exporter" {
				t.Fatalf("SUID %d: %+v", c.suid, k)
			}
			names := c.targets
			if c.suid == 21 {
				names = []string{"maf.sp.example"}
			}
			for i, tgt := range names {
				got, err := e.reg.Fetch(ctx, k.KeID, kdf.SUID(c.suid), []string{tgt})
				if err != nil {
					t.Fatalf("SUID %d, %s fetches: %v", c.suid, tgt, err)
				}
				want := k.Key
				if c.suid >= 23 {
					if k.TargetKeys[i].TargetID != tgt {
						t.Fatalf("target keys %+v", k.TargetKeys)
					}
					want = k.TargetKeys[i].Key
				}
				if len(want) != 32 || !bytes.Equal(got.Key, want) {
					t.Fatalf("SUID %d over TLS %x: %s fetched %x, the device derived %x", c.suid, c.maxTLS, tgt, got.Key, want)
				}
			}
		}
	})
}

// TestExporterRetry: a retry with the same request ID goes over a new TLS
// session and is answered with the first session's KeID; the device that
// kept that session's export derives the same keys, one that did not gets
// a clear error that retrying cannot cure.
func TestExporterRetry(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		e := newKeyEnv(t, url)
		token, aid := e.token()
		req := client.KeyRequest{Token: token, AssignedID: aid, RequestID: requestID(), SUID: 23, TargetIDs: []string{"in-cse.sp.example"}}
		conn := e.conn()
		first, err := conn.EnrolKeyWith(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		again, err := conn.EnrolKeyWith(ctx, req)
		if err != nil || !again.Replayed || again.KeID != first.KeID || !bytes.Equal(again.TargetKeys[0].Key, first.TargetKeys[0].Key) {
			t.Fatalf("retry on the same device: %+v %v", again, err)
		}
		_, err = e.conn().EnrolKeyWith(ctx, req)
		if !errors.Is(err, client.ErrExporter) || client.Retryable(err) || !strings.Contains(err.Error(), "not kept") {
			t.Fatalf("retry without the first session's export: %v", err)
		}
	})
}

// TestExporterRefusals: what exporter mode refuses, and that each refusal
// leaves the token unspent.
func TestExporterRefusals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		e := newKeyEnv(t, url)

		t.Run("TLS 1.2 without Extended Master Secret", func(t *testing.T) {
			curl, err := exec.LookPath("curl")
			if err != nil {
				t.Skipf("curl: %v", err)
			}
			// OpenSSL's own configuration turns the extension off: Go's
			// client always sends it.
			conf := filepath.Join(t.TempDir(), "no-ems.cnf")
			if err := os.WriteFile(conf, []byte("openssl_conf = c\n[c]\nssl_conf = s\n[s]\nsystem_default = d\n[d]\nOptions = -ExtendedMasterSecret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			token, aid := e.token()
			body := fmt.Sprintf(`{"token":%q,"assignedId":%q,"requestId":%q,"key":{"suid":22}}`, token, aid, requestID())
			cmd := exec.Command(curl, "-sS", "--tlsv1.2", "--tls-max", "1.2", "--cacert", e.rootPE, "-H", "Content-Type: application/json",
				"--data-binary", body, "-w", "\n%{http_code}", e.base+"/mef/v1/enrol")
			cmd.Env = append(os.Environ(), "OPENSSL_CONF="+conf)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
			text := string(out)
			if !strings.HasSuffix(strings.TrimSpace(text), "400") || !strings.Contains(text, `"tls_export_unavailable"`) || !strings.Contains(text, "Extended Master Secret") {
				t.Fatalf("no-EMS session: %s", out)
			}
			e.unspent(token)
			// The same token over a session that can export: accepted.
			if _, err := e.conn().EnrolKey(ctx, token, aid, requestID(), 22, nil); err != nil {
				t.Fatalf("the refused token afterwards: %v", err)
			}
		})

		t.Run("one enrolment key per TLS session", func(t *testing.T) {
			// Two tokens over one keep-alive connection: the second would
			// get the first's KeID.
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.roots}, MaxConnsPerHost: 1}}
			send := func(token, aid string) (int, string) {
				body := fmt.Sprintf(`{"token":%q,"assignedId":%q,"requestId":%q,"key":{"suid":22}}`, token, aid, requestID())
				resp, err := hc.Post(e.base+"/mef/v1/enrol", "application/json", strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(raw)
			}
			t1, a1 := e.token()
			if status, raw := send(t1, a1); status != 201 {
				t.Fatalf("first: %d %s", status, raw)
			}
			t2, a2 := e.token()
			if status, raw := send(t2, a2); status != 409 || !strings.Contains(raw, `"tls_session_used"`) {
				t.Fatalf("second on the same session: %d %s", status, raw)
			}
			e.unspent(t2)
			if _, err := e.conn().EnrolKey(ctx, t2, a2, requestID(), 22, nil); err != nil {
				t.Fatalf("second token on its own session: %v", err)
			}
		})

		t.Run("bad requests", func(t *testing.T) {
			for name, c := range map[string]struct {
				mode    string
				suid    int
				targets []string
				code    string
			}{
				"unknown mode":        {"hsm", 22, nil, "bad_key_mode"},
				"Kuc target not FQDN": {"", 23, []string{"Sdevice-1"}, "bad_target"},
				"Kuc without target":  {"", 24, nil, "bad_key_request"},
			} {
				token, aid := e.token()
				_, err := e.conn().EnrolKeyWith(ctx, client.KeyRequest{Token: token, AssignedID: aid, RequestID: requestID(), SUID: c.suid, TargetIDs: c.targets, Mode: c.mode})
				var ce *client.Error
				if !errors.As(err, &ce) || ce.Status != 400 || ce.Code != c.code {
					t.Errorf("%s: %v, want 400 %s", name, err, c.code)
				}
				e.unspent(token)
			}
		})
	})
}

// TestMasterModeByRequest: the project's own mode stays available per
// request: the MEF sends the key, a Kuc once per Target, each what that
// Target fetches.
func TestMasterModeByRequest(t *testing.T) {
	storetest.Each(t, func(t *testing.T, url string) {
		ctx := context.Background()
		e := newKeyEnv(t, url)
		targets := []string{"in-cse.sp.example", "mn-cse.sp.example"}
		token, aid := e.token()
		id := requestID()
		conn := e.conn()
		k, err := conn.EnrolKeyWith(ctx, client.KeyRequest{Token: token, AssignedID: aid, RequestID: id, SUID: 23, TargetIDs: targets, Mode: "master"})
		if err != nil {
			t.Fatal(err)
		}
		if k.Mode != "master" || k.Key != nil || len(k.TargetKeys) != 2 || k.Ke != nil || bytes.Equal(k.TargetKeys[0].Key, k.TargetKeys[1].Key) {
			t.Fatalf("master answer: %+v", k)
		}
		for _, tk := range k.TargetKeys {
			got, err := e.reg.Fetch(ctx, k.KeID, 23, []string{tk.TargetID})
			if err != nil || !bytes.Equal(got.Key, tk.Key) {
				t.Fatalf("%s fetched %x (%v), answer %x", tk.TargetID, got.Key, err, tk.Key)
			}
		}
		// Many master-mode enrolments share one keep-alive connection.
		token2, aid2 := e.token()
		k2, err := conn.EnrolKeyWith(ctx, client.KeyRequest{Token: token2, AssignedID: aid2, RequestID: requestID(), SUID: 22, Mode: "master"})
		if err != nil || len(k2.Key) != 32 {
			t.Fatalf("second master-mode key: %+v %v", k2, err)
		}
		// A retry gets the same keys.
		again, err := conn.EnrolKeyWith(ctx, client.KeyRequest{Token: token, AssignedID: aid, RequestID: id, SUID: 23, TargetIDs: targets, Mode: "master"})
		if err != nil || !again.Replayed || !bytes.Equal(again.TargetKeys[1].Key, k.TargetKeys[1].Key) {
			t.Fatalf("retry: %+v %v", again, err)
		}
	})
}
