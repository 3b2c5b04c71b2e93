package store

import (
	"context"
	"math/rand/v2"
	"time"
)

// retryWait is the backoff between attempts of one transaction: capped
// exponential with full jitter. A serialization failure means another
// transaction touched what this one read; retrying at once, in lock step
// with the other loser, meets the same conflict again, while a random wait
// in a growing window spreads the retries out.
type retryWait struct {
	base, max time.Duration
}

// bound is the largest wait before retry number attempt (1-based).
func (w retryWait) bound(attempt int) time.Duration {
	d := w.base
	for i := 1; i < attempt && d < w.max; i++ {
		d *= 2
	}
	return min(d, w.max)
}

// draw is the wait before retry number attempt: uniform in [0, bound].
func (w retryWait) draw(attempt int) time.Duration {
	b := w.bound(attempt)
	if b <= 0 {
		return 0
	}
	return rand.N(b + 1)
}

// wait sleeps draw(attempt), or until ctx ends.
func (w retryWait) wait(ctx context.Context, attempt int) {
	d := w.draw(attempt)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// defaultRetryWait is the policy of callers without Options at hand.
var defaultRetryWait = retryWait{base: 2 * time.Millisecond, max: 250 * time.Millisecond}

// backoff waits before retry number attempt with the default policy.
func backoff(ctx context.Context, attempt int) { defaultRetryWait.wait(ctx, attempt) }
