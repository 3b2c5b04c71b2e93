package ratelimit

import (
	"sync"
	"time"
)

// Backoff slows repeated failures under one key (an account name, a source
// and account name): after Free failures each further attempt must wait
// Base, doubled per failure up to Max, after the last failure. It never
// locks: once the wait has passed an attempt goes through, and a success
// clears the key. A key with no failure for Forget is forgotten. Keys are
// whatever the caller names, known or not, so an unknown account name is
// slowed exactly like a known one.
type Backoff[K comparable] struct {
	Free      int
	Base, Max time.Duration
	Forget    time.Duration
	MaxKeys   int
	Now       func() time.Time
	mu        sync.Mutex
	m         map[K]backoffEntry
}

type backoffEntry struct {
	failures int
	last     time.Time
}

func (b *Backoff[K]) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

// delay is the wait after failures failures, 0 within Free.
func (b *Backoff[K]) delay(failures int) time.Duration {
	if failures < b.Free {
		return 0
	}
	d := b.Base
	for i := b.Free; i < failures && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Wait is how long the key must still wait before its next attempt; 0 lets
// it through.
func (b *Backoff[K]) Wait(k K) time.Duration {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.m[k]
	now := b.now()
	if !ok || now.Sub(e.last) > b.Forget {
		return 0
	}
	if until := e.last.Add(b.delay(e.failures)); now.Before(until) {
		return until.Sub(now)
	}
	return 0
}

// Failed records a failure.
func (b *Backoff[K]) Failed(k K) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if b.m == nil {
		b.m = map[K]backoffEntry{}
	}
	e := b.m[k]
	if now.Sub(e.last) > b.Forget {
		e.failures = 0
	}
	e.failures++
	e.last = now
	if _, ok := b.m[k]; !ok && b.MaxKeys > 0 && len(b.m) >= b.MaxKeys {
		b.sweep(now)
	}
	b.m[k] = e
}

// sweep drops forgotten keys, then, if the map is still full, the keys with
// the fewest failures: memory stays bounded under a flood of names.
func (b *Backoff[K]) sweep(now time.Time) {
	for k, e := range b.m {
		if now.Sub(e.last) > b.Forget {
			delete(b.m, k)
		}
	}
	for low := 1; len(b.m) >= b.MaxKeys; low++ {
		for k, e := range b.m {
			if e.failures <= low {
				delete(b.m, k)
			}
		}
	}
}

// Succeeded clears the key.
func (b *Backoff[K]) Succeeded(k K) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, k)
}
