package ratelimit

import (
	"fmt"
	"hash/maphash"
	"math"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/credfactory/credfactory/apierr"
)

// DefaultMaxKeys bounds the keys one limiter tracks unless Options says
// otherwise: ~10 MB of map at most per limit.
const DefaultMaxKeys = 1 << 17

const (
	// sweepEvery: a shard drops its idle keys at most this often in
	// normal operation, so memory follows the active set, not the peak.
	sweepEvery = int64(time.Minute)
	// minSweepGap: a full shard sweeps at most this often; between sweeps
	// it evicts by sampling, so a flood of keys that are all active cannot
	// make every insertion scan the whole shard.
	minSweepGap = int64(time.Second)
	// evictSample entries are looked at to pick one to evict (the one
	// nearest to idle), as Redis approximates LRU.
	evictSample = 8
)

// Options configure one Limiter.
type Options struct {
	// Name labels the limit in metrics and in the 429's message; never a key.
	Name string
	// Rate is the sustained requests per second per key; <= 0 disables
	// the limit (New returns nil, which admits everything).
	Rate float64
	// Burst is how many requests a fresh (or long idle) key may make at
	// once; below 1 means 1.
	Burst int
	// MaxKeys bounds the keys tracked (0: DefaultMaxKeys). At the bound
	// idle keys are dropped first (no answer changes); if all are active
	// the one nearest to idle is dropped, which gives it its burst back
	// early: a flood of distinct keys loosens the limit for some keys
	// rather than growing memory or refusing strangers.
	MaxKeys int
	// Now is the clock (tests inject one); nil means the monotonic clock.
	Now func() time.Time
	// Observer counts refusals; nil counts nothing.
	Observer Observer
}

// Observer receives what the limits measure (package metrics implements
// it). Labels are limit names, a fixed set, never keys.
type Observer interface {
	// ObserveRateLimited counts one refused request.
	ObserveRateLimited(limit string)
	// ObserveLimit publishes a limit's configuration (rate 0: disabled).
	ObserveLimit(limit string, perSecond float64, burst int)
}

// Limiter is a GCRA rate limit per key, in memory, safe for concurrent use.
// A nil *Limiter admits everything, so a disabled limit costs one nil check.
type Limiter[K comparable] struct {
	name      string
	interval  int64 // ns between requests at the sustained rate
	tolerance int64 // interval*(burst-1): how far TAT may run ahead of now
	seed      maphash.Seed
	mask      uint64
	perShard  int
	shards    []shard[K]
	now       func() int64
	obs       Observer
}

// shard is one mutex and its keys, padded to its own cache line so that
// cores locking neighbouring shards do not contend on the line.
type shard[K comparable] struct {
	mu    sync.Mutex
	tat   map[K]int64 // theoretical arrival time, ns since the epoch
	swept int64
	_     [40]byte
}

// New builds a limiter, or returns nil (admit all) when o.Rate <= 0.
func New[K comparable](o Options) *Limiter[K] {
	if o.Rate <= 0 || math.IsNaN(o.Rate) {
		return nil
	}
	if o.Burst < 1 {
		o.Burst = 1
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	// Enough shards that cores rarely meet on one mutex, a power of two
	// so that picking one is a mask.
	n := 64
	for n < 4*runtime.GOMAXPROCS(0) {
		n *= 2
	}
	interval := math.Min(float64(time.Second)/o.Rate, math.MaxInt64/4/float64(o.Burst))
	l := &Limiter[K]{name: o.Name, seed: maphash.MakeSeed(), mask: uint64(n - 1),
		interval: max(int64(interval), 1), perShard: max((o.MaxKeys+n-1)/n, 1), shards: make([]shard[K], n), obs: o.Observer}
	l.tolerance = l.interval * int64(o.Burst-1)
	for i := range l.shards {
		l.shards[i].tat = make(map[K]int64)
	}
	if o.Now != nil {
		epoch := o.Now()
		l.now = func() int64 { return int64(o.Now().Sub(epoch)) }
	} else {
		epoch := time.Now()
		l.now = func() int64 { return int64(time.Since(epoch)) } // monotonic
	}
	return l
}

// Allow admits one request for key, or says how long until one would be.
func (l *Limiter[K]) Allow(key K) (ok bool, retryAfter time.Duration) { return l.AllowN(key, 1) }

// AllowN admits a request that costs n (a forwarded batch of n items) when
// the key has at least one request of burst left, and charges all n: a
// batch larger than the burst still passes once, then the key waits for
// the whole of it, so the long-run rate holds for any batch size. For n = 1
// this is plain GCRA.
func (l *Limiter[K]) AllowN(key K, n int) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	s := &l.shards[maphash.Comparable(l.seed, key)&l.mask]
	s.mu.Lock()
	tat, found := s.tat[key]
	if tat < now {
		tat = now // idle: the full burst again, as for a key never seen
	}
	if wait := tat - now - l.tolerance; wait > 0 {
		s.mu.Unlock()
		if l.obs != nil {
			l.obs.ObserveRateLimited(l.name)
		}
		return false, time.Duration(wait)
	}
	next := tat + int64(max(n, 1))*l.interval
	if found {
		s.tat[key] = next
	} else {
		l.insert(s, key, next, now)
	}
	s.mu.Unlock()
	return true, 0
}

// insert adds a key to a locked shard, keeping the shard within perShard.
func (l *Limiter[K]) insert(s *shard[K], key K, tat, now int64) {
	if len(s.tat) >= l.perShard || now-s.swept >= sweepEvery {
		if now-s.swept >= minSweepGap {
			// A key whose TAT has passed is equivalent to an absent one.
			for k, t := range s.tat {
				if t <= now {
					delete(s.tat, k)
				}
			}
			s.swept = now
		}
		for len(s.tat) >= l.perShard {
			var victim K
			best, seen := int64(math.MaxInt64), 0
			for k, t := range s.tat { // map iteration starts at random
				if t < best {
					victim, best = k, t
				}
				if seen++; seen == evictSample {
					break
				}
			}
			delete(s.tat, victim)
		}
	}
	s.tat[key] = tat
}

// Len is the number of keys tracked (for tests and diagnostics).
func (l *Limiter[K]) Len() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.tat)
		s.mu.Unlock()
	}
	return n
}

// Check admits one request for key or returns the 429 to answer.
func (l *Limiter[K]) Check(key K) error { return l.CheckN(key, 1) }

// CheckN is Check for a request costing n (see AllowN).
func (l *Limiter[K]) CheckN(key K, n int) error {
	ok, wait := l.AllowN(key, n)
	if ok {
		return nil
	}
	return Refusal(l.name, wait)
}

// Refusal is the 429 for a request refused by limit name, due again after
// wait: Retry-After in whole seconds, rounded up (RFC 9110 §10.2.3 has no
// fractions, and rounding down would invite a retry that fails again).
func Refusal(name string, wait time.Duration) *apierr.Error {
	secs := max(int((wait+time.Second-1)/time.Second), 1)
	return &apierr.Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Message: fmt.Sprintf("too many requests (limit %s): retry in %d s", name, secs), RetryAfter: secs}
}
