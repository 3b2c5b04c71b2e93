package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credfactory/credfactory/store/storetest"
)

// TestSerializationConflictsAreRetried makes two PostgreSQL transactions
// conflict (each reads what the other writes: write skew, which SERIALIZABLE
// forbids) and shows both end committed, with the retry counted.
func TestSerializationConflictsAreRetried(t *testing.T) {
	obs := &countingObserver{}
	s := openPostgresForTest(t, obs)
	ctx := context.Background()
	a := newEnrolment(t, s, nil)
	b := newEnrolment(t, s, nil)

	var bothRead sync.WaitGroup
	bothRead.Add(2)
	var first atomic.Int32
	skew := func(readDev, writeDev string) error {
		return s.tx(ctx, "skew", func(q querier) error {
			var state string
			if err := q.queryRow(ctx, `SELECT state FROM enrolments WHERE device_id = $1`, readDev).Scan(&state); err != nil {
				return err
			}
			if first.Add(1) <= 2 { // only the first attempts wait for each other
				bothRead.Done()
				bothRead.Wait()
			}
			_, err := q.exec(ctx, `UPDATE enrolments SET request_id = $2 WHERE device_id = $1`, writeDev, "seen-"+state)
			return err
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- skew(a.DeviceID, b.DeviceID) }()
	go func() { errs <- skew(b.DeviceID, a.DeviceID) }()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("conflicting transaction failed instead of retrying: %v", err)
		}
	}
	_, retries, _ := obs.snapshot()
	if retries["skew"] < 1 {
		t.Fatalf("no retry recorded: the transactions did not conflict (%v)", retries)
	}
}

func TestUnreachableDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, "postgres://nobody:secret-pw@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", Options{MaxRetries: 1})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	if strings.Contains(err.Error(), "secret-pw") {
		t.Fatalf("error carries the password: %v", err)
	}
}

// TestPostgresRestartMidRun restarts the server under concurrent
// redemptions. Requests may fail while it is down (with ErrUnavailable),
// but afterwards every redeemed token has its credential and every
// credential its redeemed token, and the store works without reopening.
func TestPostgresRestartMidRun(t *testing.T) {
	// A server of its own: restarting the shared one would break the other
	// packages' tests running beside this one.
	cluster := storetest.PrivateCluster(t)
	obs := &countingObserver{}
	s := openURLForTest(t, cluster.URL, obs)
	b := s.NewBatcher(BatchOptions{})
	defer b.Close()
	ctx := context.Background()

	const workers, perWorker = 16, 40
	enrolments := make([][]Enrolment, workers)
	for w := range enrolments {
		for i := 0; i < perWorker; i++ {
			enrolments[w] = append(enrolments[w], newEnrolment(t, s, nil))
		}
	}
	var ok, unavailable, other atomic.Int64
	var wg sync.WaitGroup
	restarted := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, e := range enrolments[w] {
				if w == 0 && i == perWorker/4 {
					<-restarted // make sure part of the run follows the restart
				}
				rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				_, err := b.Redeem(rctx, redemption(e, certCredential()))
				cancel()
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrUnavailable):
					unavailable.Add(1)
				default:
					other.Add(1)
					t.Logf("redeem: %v", err)
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	cluster.Run("restart")
	close(restarted)
	wg.Wait()
	t.Logf("during restart: %d redeemed, %d unavailable, %d other", ok.Load(), unavailable.Load(), other.Load())
	if other.Load() != 0 {
		t.Fatalf("%d redemptions failed with something other than ErrUnavailable", other.Load())
	}
	if _, retries, _ := obs.snapshot(); retries["redeem_batch"] == 0 && unavailable.Load() == 0 {
		t.Fatal("nothing noticed the restart: it did not happen mid-run")
	}

	// The store recovered by itself.
	e := newEnrolment(t, s, nil)
	if _, err := b.Redeem(ctx, redemption(e, certCredential())); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	var orphanTokens, orphanCreds int
	err := s.read(ctx, func(q querier) error {
		if err := q.queryRow(ctx, `SELECT count(*) FROM enrolments e WHERE e.state = 'redeemed'
			AND NOT EXISTS (SELECT 1 FROM credentials c WHERE c.id = e.credential_id AND c.enrolment_token_hash = e.token_hash)`).Scan(&orphanTokens); err != nil {
			return err
		}
		return q.queryRow(ctx, `SELECT count(*) FROM credentials c WHERE NOT EXISTS
			(SELECT 1 FROM enrolments e WHERE e.token_hash = c.enrolment_token_hash AND e.state = 'redeemed' AND e.credential_id = c.id)`).Scan(&orphanCreds)
	})
	if err != nil {
		t.Fatal(err)
	}
	if orphanTokens != 0 || orphanCreds != 0 {
		t.Fatalf("%d redeemed tokens without a credential, %d credentials without a redeemed token", orphanTokens, orphanCreds)
	}
	var redeemed int
	if err := s.read(ctx, func(q querier) error {
		return q.queryRow(ctx, `SELECT count(*) FROM enrolments WHERE state = 'redeemed'`).Scan(&redeemed)
	}); err != nil {
		t.Fatal(err)
	}
	if int64(redeemed) != ok.Load()+1 {
		t.Fatalf("%d tokens redeemed, but %d redemptions succeeded: an answer was lost or a redemption was not reported", redeemed, ok.Load()+1)
	}
}

func TestRedact(t *testing.T) {
	for _, in := range []string{
		"postgres://u:hunter2@db:5432/x?sslmode=disable",
		"postgres://u@db:5432/x?password=hunter2&sslmode=disable",
		"postgres://u:hunter2@db:5432/x?password=hunter2",
	} {
		if out := redact(in); strings.Contains(out, "hunter2") {
			t.Errorf("redact(%q) = %q", in, out)
		}
	}
}
