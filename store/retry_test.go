package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/credfactory/credfactory/store/storetest"
	"github.com/jackc/pgx/v5"
)

// TestRetryWaitBounds: the wait before retry n is drawn from [0, base *
// 2^(n-1)], capped at max.
func TestRetryWaitBounds(t *testing.T) {
	w := retryWait{base: 2 * time.Millisecond, max: 250 * time.Millisecond}
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{
		{1, 2 * time.Millisecond}, {2, 4 * time.Millisecond}, {5, 32 * time.Millisecond},
		{8, 250 * time.Millisecond}, {30, 250 * time.Millisecond},
	} {
		if got := w.bound(tc.attempt); got != tc.want {
			t.Errorf("bound(%d) = %v, want %v", tc.attempt, got, tc.want)
		}
	}
	// Jitter: the waits drawn differ and stay within the bound.
	seen := map[time.Duration]bool{}
	for range 100 {
		d := w.draw(5)
		if d < 0 || d > 32*time.Millisecond {
			t.Fatalf("a wait bounded by 32ms drew %v", d)
		}
		seen[d] = true
	}
	if len(seen) < 50 {
		t.Errorf("100 jittered waits drew only %d distinct durations", len(seen))
	}
}

// TestConflictsOutlastingRetriesAreContention: a transaction that keeps
// losing its row to another one through its whole retry budget fails with
// ErrContention, not ErrUnavailable: the database answered, and the client
// must not be told it is down.
func TestConflictsOutlastingRetriesAreContention(t *testing.T) {
	url := storetest.PostgresURL(t)
	ctx := context.Background()
	s, err := Open(ctx, url, Options{MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateStakeholder(ctx, Stakeholder{ID: "hot", Name: "hot", Role: RoleSubscriber, CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	other, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	attempts := 0
	err = s.tx(ctx, "test_contention", func(q querier) error {
		attempts++
		var n int
		if err := q.queryRow(ctx, `SELECT claim_failures FROM stakeholders WHERE id = 'hot'`).Scan(&n); err != nil {
			return err
		}
		// Another transaction changes the row after this one read it.
		if _, err := other.Exec(ctx, `UPDATE stakeholders SET claim_failures = claim_failures + 1 WHERE id = 'hot'`); err != nil {
			return err
		}
		_, err := q.exec(ctx, `UPDATE stakeholders SET claim_failures = $1 WHERE id = 'hot'`, n+10)
		return err
	})
	if !errors.Is(err, ErrContention) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("after %d attempts: %v, want ErrContention and not ErrUnavailable", attempts, err)
	}
	if attempts != 2 {
		t.Fatalf("%d attempts, want 2 (one retry)", attempts)
	}
}
