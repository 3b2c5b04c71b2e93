package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/credfactory/credfactory/store/storetest"
)

// backends runs f once per engine: the embedded SQLite file and PostgreSQL
// (in a schema of its own per test, so tests never see each other's rows).
func backends(t *testing.T, f func(t *testing.T, s *Store, obs *countingObserver)) {
	storetest.Each(t, func(t *testing.T, url string) {
		obs := &countingObserver{}
		f(t, openURLForTest(t, url, obs), obs)
	})
}

func openSQLiteForTest(t testing.TB, obs Observer) *Store {
	t.Helper()
	return openURLForTest(t, "sqlite://"+filepath.Join(t.TempDir(), "registry.db"), obs)
}

func openPostgresForTest(t testing.TB, obs Observer) *Store {
	t.Helper()
	return openURLForTest(t, storetest.PostgresURL(t), obs)
}

func openURLForTest(t testing.TB, url string, obs Observer) *Store {
	t.Helper()
	s, err := Open(context.Background(), url, Options{Observer: obs, MaxConns: 40})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

type countingObserver struct {
	mu      sync.Mutex
	retries map[string]int
	txs     map[string]int
	batches []int
}

func (o *countingObserver) ObserveTx(op string, _ time.Duration, retries int, _ error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.txs == nil {
		o.txs, o.retries = map[string]int{}, map[string]int{}
	}
	o.txs[op]++
	o.retries[op] += retries
}

func (o *countingObserver) ObserveBatch(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.batches = append(o.batches, n)
}

func (o *countingObserver) snapshot() (txs, retries map[string]int, batches []int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	txs, retries = map[string]int{}, map[string]int{}
	for k, v := range o.txs {
		txs[k] = v
	}
	for k, v := range o.retries {
		retries[k] = v
	}
	return txs, retries, append([]int(nil), o.batches...)
}

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// newEnrolment stores an issued token for a new device and returns the
// token hash.
func newEnrolment(t testing.TB, s *Store, mod func(*Enrolment)) Enrolment {
	t.Helper()
	token := randomBytes(32)
	h := sha256.Sum256(token)
	id := fmt.Sprintf("dev-%x", randomBytes(4))
	e := Enrolment{
		TokenHash: h[:], DeviceID: id, AssignedID: "S" + id, StakeholderID: "stk-1", Tenant: "tenant-1",
		Mode: ModeUntrusted, ExpiresAt: t0.Add(24 * time.Hour), CreatedAt: t0,
	}
	if mod != nil {
		mod(&e)
	}
	// The device is uploaded by its manufacturer; the token's tenant claims
	// it (CreateEnrolment moves an unowned pre-enrolled device).
	if _, err := s.UpsertDevices(context.Background(), "maker-1", []Device{{ID: e.DeviceID}}, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateEnrolment(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	return e
}

// certCredential is a certificate credential with unique fake DER.
func certCredential() Credential {
	der := randomBytes(64)
	fp := sha256.Sum256(der)
	pk := sha256.Sum256(randomBytes(32))
	serial := fmt.Sprintf("%x", randomBytes(16))
	return Credential{
		ID: fmt.Sprintf("33-%x", fp), Type: TypeX509, SUID: 42, Serial: &serial, CertSHA256: fp[:], CertDER: der,
		PublicKeySHA256: pk[:], NotBefore: t0, NotAfter: t0.Add(365 * 24 * time.Hour), Source: SourceRSPF,
	}
}

func redemption(e Enrolment, c Credential) Redemption {
	return Redemption{TokenHash: e.TokenHash, RequestID: fmt.Sprintf("req-%x", randomBytes(6)), AssignedID: e.AssignedID,
		Mode: e.Mode, Now: t0.Add(time.Minute), Credential: c}
}
