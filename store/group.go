package store

import (
	"context"
	"fmt"
	"sync"
)

// groupCommit runs small write transactions of one kind together, each in
// a savepoint of one shared transaction, on SQLite: it has one writer, and
// a commit costs an fsync (synchronous FULL), so one token per commit caps
// token requests at the disk's fsync rate. Items run one after the other
// inside the transaction, each seeing the ones before it, exactly as
// separate transactions would in that order; an item's error rolls back
// its savepoint only, so an item is refused or written whole, and nothing
// is acknowledged before the commit. A failed commit fails every item of
// it, none of which was written.
type groupCommit struct {
	s  *Store
	op string
	in chan *groupItem
	wg sync.WaitGroup
	// mu guards closed and the channel: senders hold a read lock, so close
	// (write lock) never closes the channel under a sender.
	mu     sync.RWMutex
	closed bool
}

type groupItem struct {
	fn   func(q querier) error
	done chan error
}

// maxGroup bounds the items of one commit: the writer is held that long.
const maxGroup = 128

func newGroupCommit(s *Store, op string) *groupCommit {
	g := &groupCommit{s: s, op: op, in: make(chan *groupItem, maxGroup)}
	g.wg.Add(1)
	go g.run()
	return g
}

// do queues fn and waits for its outcome. Once queued, the item is carried
// to the end of its commit even if ctx ends: the caller's statements use
// ctx and fail by themselves then, which refuses that item alone.
func (g *groupCommit) do(ctx context.Context, fn func(q querier) error) error {
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
				if _, err := q.exec(ctx, `SAVEPOINT item`); err != nil {
					return err
				}
				errs[i] = it.fn(q)
				if errs[i] != nil {
					if _, err := q.exec(ctx, `ROLLBACK TO item`); err != nil {
						return err
					}
				}
				if _, err := q.exec(ctx, `RELEASE item`); err != nil {
					return err
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
