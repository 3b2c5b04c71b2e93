package store

import (
	"context"
	"fmt"
	"sync"
)

// groupCommit runs small write transactions of one kind together in one
// shared transaction, on SQLite: it has one writer, and a commit costs an
// fsync (synchronous FULL), so one token per commit capped token requests
// at the disk's fsync rate. Items run one after the other inside the
// transaction, each seeing the ones before it, exactly as separate
// transactions would in that order, and nothing is acknowledged before the
// commit. An item may refuse (refusal reports which errors are refusals)
// only before it has written anything, and is then left out; any other
// error aborts the whole transaction, and with it every item (none was
// written). Items run on a context of their own, so a caller that hangs
// up cannot cut its item in half: a half-written item would commit with
// the others. (No savepoint per item: on SQLite each costs two more
// statements to parse and run on the one writer.)
type groupCommit struct {
	s       *Store
	op      string
	refusal func(error) bool
	in      chan *groupItem
	wg      sync.WaitGroup
	// mu guards closed and the channel: senders hold a read lock, so close
	// (write lock) never closes the channel under a sender.
	mu     sync.RWMutex
	closed bool
}

type groupItem struct {
	fn   func(ctx context.Context, q querier) error
	done chan error
}

// maxGroup bounds the items of one commit: the writer is held that long.
const maxGroup = 128

func newGroupCommit(s *Store, op string, refusal func(error) bool) *groupCommit {
	g := &groupCommit{s: s, op: op, refusal: refusal, in: make(chan *groupItem, maxGroup)}
	g.wg.Add(1)
	go g.run()
	return g
}

// do queues fn and waits for its outcome. Once queued, the item is carried
// to the end of its commit even if ctx ends.
func (g *groupCommit) do(ctx context.Context, fn func(ctx context.Context, q querier) error) error {
	it := &groupItem{fn: fn, done: make(chan error, 1)}
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return fmt.Errorf("%w: %w", ErrUnavailable, ErrClosed)
	}
	select {
	case g.in <- it:
		g.mu.RUnlock()
	case <-ctx.Done():
		g.mu.RUnlock()
		return ctx.Err()
	}
	return <-it.done
}

func (g *groupCommit) close() {
	g.mu.Lock()
	if !g.closed {
		g.closed = true
		close(g.in)
	}
	g.mu.Unlock()
	g.wg.Wait()
}

func (g *groupCommit) run() {
	defer g.wg.Done()
	for first := range g.in {
		batch := []*groupItem{first}
	fill:
		for len(batch) < maxGroup {
			select {
			case it, ok := <-g.in:
				if !ok {
					break fill
				}
				batch = append(batch, it)
			default:
				break fill
			}
		}
		errs := make([]error, len(batch))
		ctx := context.Background()
		err := g.s.tx(ctx, g.op, func(q querier) error {
			for i, it := range batch {
				errs[i] = it.fn(ctx, q)
				if errs[i] != nil && !g.refusal(errs[i]) {
					return errs[i]
				}
			}
			return nil
		})
		for i, it := range batch {
			if err != nil {
				it.done <- err
			} else {
				it.done <- errs[i]
			}
		}
	}
}
