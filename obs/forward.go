package obs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"path/filepath"
	"strings"
	"time"

	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/forwardapi"
)

const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// send forwards the outbox in batches until it is empty. A batch the SP
// did not answer, or answered 503/429, is sent again with backoff; so are
// items refused for a transient reason. It gives up when retry_timeout
// passes without progress, or on an answer that retrying cannot change
// (401/403: this OBS is not, or no longer, a trusted OBF); what is unsent
// stays in the outbox for the next call.
func (o *OBS) send(ctx context.Context, c *counters) error {
	backoff := minBackoff
	deadline := time.Now().Add(o.cfg.RetryTimeout)
	wait := func(cause error) error {
		if time.Now().Add(backoff).After(deadline) {
			return cause
		}
		select {
		case <-ctx.Done():
			return cause
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
		return nil
	}
	for {
		names, err := o.sendable()
		if err != nil {
			return err
		}
		if len(names) == 0 {
			return nil
		}
		kept := 0
		for len(names) > 0 {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			n := min(int(o.batch.Load()), len(names))
			chunk := names[:n]
			k, done, err := o.sendBatch(ctx, chunk, c)
			var ce *client.Error
			var le localError
			switch {
			case err == nil:
			case errors.As(err, &le):
				return le.error
			case errors.As(err, &ce) && ce.Status == http.StatusRequestEntityTooLarge && n > 1:
				// The SP takes smaller batches than batch_size.
				o.batch.Store(int64(max(1, n/2)))
				o.log.Warn("the SP refused the batch size; halving it", "batch_size", max(1, n/2))
				continue
			case client.Retryable(err):
				o.log.Warn("forward failed; retrying", "items", n, "err", err.Error(), "backoff", backoff.String())
				if werr := wait(err); werr != nil {
					return fmt.Errorf("forward %d items: %w", n, werr)
				}
				continue
			default:
				return fmt.Errorf("forward %d items: %w", n, err)
			}
			names = names[n:]
			kept += k
			if done > 0 {
				backoff = minBackoff
				deadline = time.Now().Add(o.cfg.RetryTimeout)
			}
		}
		if kept > 0 {
			if err := wait(fmt.Errorf("%d items refused for a transient reason", kept)); err != nil {
				return err
			}
		}
	}
}

// localError is a failure of the OBS's own disk while applying answers:
// not the SP's, so not retried by send.
type localError struct{ error }

// sendable lists the outbox without the records of jobs still being
// provisioned.
func (o *OBS) sendable() ([]string, error) {
	names, err := o.spool.list(DirOutbox)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if _, busy := o.busy.Load(strings.TrimSuffix(n, ".json")); !busy {
			out = append(out, n)
		}
	}
	return out, nil
}

// sendBatch sends the named records as one request and applies the
// answers: recorded and replayed items leave the outbox, refused ones go to
// refused/ with the SP's code and message, transiently refused ones stay
// (kept). done counts the items that left the outbox.
func (o *OBS) sendBatch(ctx context.Context, names []string, c *counters) (kept, done int, err error) {
	items := make([]client.ForwardItem, 0, len(names))
	files := make([]string, 0, len(names))
	for _, name := range names {
		rec, err := o.readRecord(name)
		if err != nil {
			// Never half written (writeDurable): a damaged disk. Set it
			// aside rather than block the outbox.
			o.log.Error("unreadable outbox item moved to refused/", "file", name, "err", err.Error())
			if err := o.writeRefusal(name, Refusal{Source: "obs", Code: "unreadable_outbox_item", Message: err.Error(), RefusedAt: o.now().UTC()}); err != nil {
				return kept, done, localError{err}
			}
			if err := remove(filepath.Join(o.spool.dir(DirOutbox), name)); err != nil {
				return kept, done, localError{err}
			}
			continue
		}
		items = append(items, rec.Item)
		files = append(files, name)
	}
	if len(items) == 0 {
		return 0, 0, nil
	}
	start := time.Now()
	results, err := o.conn.Forward(ctx, items)
	if err != nil {
		return 0, 0, err
	}
	if len(results) != len(items) {
		// Not an answer this client understands: send it all again.
		return 0, 0, fmt.Errorf("the SP answered %d results for %d items", len(results), len(items))
	}
	answered := make([]bool, len(items))
	for _, r := range results {
		if r.Index < 0 || r.Index >= len(items) || answered[r.Index] {
			continue
		}
		answered[r.Index] = true
		it, file := items[r.Index], files[r.Index]
		path := filepath.Join(o.spool.dir(DirOutbox), file)
		switch {
		case r.Status == forwardapi.StatusRecorded || r.Status == forwardapi.StatusReplayed:
			// The device's file first, durable, then the record goes: a
			// crash in between resends the item, and the SP answers the
			// same credential again (replayed).
			if err := o.writeResult(it, r); err != nil {
				return kept, done, localError{err}
			}
			if err := remove(path); err != nil {
				return kept, done, localError{err}
			}
			done++
			if r.Status == forwardapi.StatusRecorded {
				c.recorded.Add(1)
			} else {
				c.replayed.Add(1)
			}
			o.log.Info("forwarded", "assigned_id", it.AssignedID, "status", r.Status, "credential_id", r.CredentialID)
		case r.Status == forwardapi.StatusRefused && !forwardapi.Transient(r.Code):
			item := it
			ref := Refusal{Source: "sp", Code: r.Code, Message: r.Message, RefusedAt: o.now().UTC(), Item: &item}
			if err := o.writeRefusal(file, ref); err != nil {
				return kept, done, localError{err}
			}
			if err := remove(path); err != nil {
				return kept, done, localError{err}
			}
			done++
			c.refused.Add(1)
			o.log.Warn("refused by the SP; moved to refused/", "assigned_id", it.AssignedID, "code", r.Code, "message", r.Message)
		default:
			kept++
			o.log.Warn("not recorded yet; kept in the outbox", "assigned_id", it.AssignedID, "status", r.Status, "code", r.Code)
		}
	}
	for i, a := range answered {
		if !a {
			kept++
			o.log.Warn("no answer for an item; kept in the outbox", "assigned_id", items[i].AssignedID)
		}
	}
	o.log.Debug("batch forwarded", "items", len(items), "took", time.Since(start).String())
	return kept, done, nil
}

// writeResult writes the device's file from the item and the SP's answer.
func (o *OBS) writeResult(it client.ForwardItem, ans client.ForwardResult) error {
	res, err := o.result(it, ans)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return writeDurable(o.spool.dir(DirOut), outName(it.AssignedID), data)
}
