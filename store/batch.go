package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Redeem redeems one token and records its credential in a transaction of
// its own. Under load use a Batcher, which shares commits.
func (s *Store) Redeem(ctx context.Context, r Redemption) (Redeemed, error) {
	if err := checkRedemption(r); err != nil {
		return Redeemed{}, err
	}
	var outs []Redeemed
	var refusals []error
	err := s.tx(ctx, "redeem", func(q querier) (err error) {
		outs, refusals, err = redeemBatch(ctx, q, []Redemption{r})
		return err
	})
	if err != nil {
		return Redeemed{}, fmt.Errorf("redeem: %w", err)
	}
	if refusals[0] != nil {
		return Redeemed{}, fmt.Errorf("redeem: %w", refusals[0])
	}
	return outs[0], nil
}

func checkRedemption(r Redemption) error {
	if len(r.TokenHash) != 32 || r.RequestID == "" || r.Now.IsZero() {
		return errors.New("redeem: token hash, request ID and time are required")
	}
	return nil
}

// BatchOptions shape group commit.
type BatchOptions struct {
	// MaxItems caps a batch (default 128).
	MaxItems int
	// Window is how long a batch waits for company after its first item.
	// Zero (the default) waits for nothing: a batch is whatever queued up
	// while the previous commit ran, so an idle system adds no latency and a
	// busy one fills batches by itself.
	Window time.Duration
	// Workers commit batches in parallel (default 1). One is best measured
	// on both engines: parallel committers split the queue into small
	// batches, and on PostgreSQL concurrent serializable batches abort each
	// other (predicate locks escalate with batch size). Raise it for a
	// CockroachDB cluster whose commit latency, not its throughput, limits.
	Workers int
}

// Batcher is group commit for redemptions: concurrent callers share one
// transaction, each gets its own result, and a refused item (a redeemed or
// expired token) never fails its neighbours.
type Batcher struct {
	s   *Store
	opt BatchOptions
	in  chan *pending
	wg  sync.WaitGroup
	// mu guards closed and the channel: Redeem sends under a read lock, so
	// Close (write lock) never closes the channel under a sender.
	mu     sync.RWMutex
	closed bool
}

// ErrClosed: the batcher was closed (the server is shutting down).
var ErrClosed = errors.New("store: shutting down")

type pending struct {
	ctx  context.Context
	r    Redemption
	done chan batchResult
}

type batchResult struct {
	out Redeemed
	err error
}

// NewBatcher starts the committers. Close stops them.
func (s *Store) NewBatcher(opt BatchOptions) *Batcher {
	if opt.MaxItems <= 0 {
		opt.MaxItems = 128
	}
	if opt.Workers <= 0 {
		opt.Workers = 1
	}
	b := &Batcher{s: s, opt: opt, in: make(chan *pending, opt.MaxItems*opt.Workers)}
	for i := 0; i < opt.Workers; i++ {
		b.wg.Add(1)
		go b.run()
	}
	return b
}

// Close stops accepting work and waits for queued redemptions to commit.
func (b *Batcher) Close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.in)
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// Redeem queues r for the next batch and waits for its result. If ctx ends
// while r is still queued, r is dropped; once its batch is committing, the
// result is delivered (a retry of the same request will find it anyway).
func (b *Batcher) Redeem(ctx context.Context, r Redemption) (Redeemed, error) {
	if err := checkRedemption(r); err != nil {
		return Redeemed{}, err
	}
	p := &pending{ctx: ctx, r: r, done: make(chan batchResult, 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return Redeemed{}, fmt.Errorf("redeem: %w: %w", ErrUnavailable, ErrClosed)
	}
	select {
	case b.in <- p:
		b.mu.RUnlock()
	case <-ctx.Done():
		b.mu.RUnlock()
		return Redeemed{}, fmt.Errorf("redeem: %w", ctx.Err())
	}
	select {
	case res := <-p.done:
		return res.out, res.err
	case <-ctx.Done():
		return Redeemed{}, fmt.Errorf("redeem: %w", ctx.Err())
	}
}

func (b *Batcher) run() {
	defer b.wg.Done()
	for first := range b.in {
		batch := append(make([]*pending, 0, b.opt.MaxItems), first)
		if b.opt.Window > 0 {
			timer := time.NewTimer(b.opt.Window)
		fill:
			for len(batch) < b.opt.MaxItems {
				select {
				case p, ok := <-b.in:
					if !ok {
						break fill
					}
					batch = append(batch, p)
				case <-timer.C:
					break fill
				}
			}
			timer.Stop()
		} else {
		drain:
			for len(batch) < b.opt.MaxItems {
				select {
				case p, ok := <-b.in:
					if !ok {
						break drain
					}
					batch = append(batch, p)
				default:
					break drain
				}
			}
		}
		b.commit(batch)
	}
}

func (b *Batcher) commit(batch []*pending) {
	live := batch[:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.done <- batchResult{err: fmt.Errorf("redeem: %w", err)}
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return
	}
	// The batch belongs to no single caller: it gets its own deadline.
	ctx, cancel := context.WithTimeout(context.Background(), b.s.opt.TxTimeout*2)
	defer cancel()
	items := make([]Redemption, len(live))
	for i, p := range live {
		items[i] = p.r
	}
	results := make([]batchResult, len(live))
	err := b.s.tx(ctx, "redeem_batch", func(q querier) error {
		outs, refusals, err := redeemBatch(ctx, q, items)
		if err != nil {
			return err
		}
		for i := range live {
			results[i] = batchResult{out: outs[i]}
			if refusals[i] != nil {
				results[i] = batchResult{err: fmt.Errorf("redeem: %w", refusals[i])}
			}
		}
		return nil
	})
	b.s.obs.ObserveBatch(len(live))
	switch {
	case err == nil:
		for i, p := range live {
			p.done <- results[i]
		}
	case len(live) > 1 && !errors.Is(err, ErrUnavailable):
		// One item broke the transaction (say, a duplicate Credential-ID):
		// commit each on its own so only that one fails.
		for _, p := range live {
			out, err := b.s.Redeem(ctx, p.r)
			p.done <- batchResult{out: out, err: err}
		}
	default:
		for _, p := range live {
			p.done <- batchResult{err: fmt.Errorf("redeem: %w", err)}
		}
	}
}
