package softhsmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/credfactory/credfactory/hsm/softhsm"
)

// Outage makes the one token of a SoftHSM2 store unavailable to a running
// process and available again, for fault tests. SoftHSM2 scans every
// directory of its token store, so hiding a token means moving its
// directory out of the store (next to it), not renaming it in place; a
// moved directory is safe under running calls, unlike closing their
// sessions. Away and Back may be called in any order and from any
// goroutine; each is a no-op when the token is already where it asks.
type Outage struct {
	mu      sync.Mutex
	in, out string
	away    bool
}

// NewOutage prepares an outage of the only token in store dir (the
// directory softhsm.Provision was given).
func NewOutage(dir string) (*Outage, error) {
	tokens := filepath.Join(dir, softhsm.TokensDir)
	entries, err := os.ReadDir(tokens)
	if err != nil {
		return nil, fmt.Errorf("softhsm outage: %w", err)
	}
	if len(entries) != 1 {
		return nil, fmt.Errorf("softhsm outage: %s holds %d tokens, want 1", tokens, len(entries))
	}
	name := entries[0].Name()
	return &Outage{in: filepath.Join(tokens, name), out: filepath.Join(dir, "away-"+name)}, nil
}

// Away hides the token.
func (o *Outage) Away() error { return o.move(true) }

// Back returns the token to the store.
func (o *Outage) Back() error { return o.move(false) }

func (o *Outage) move(away bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.away == away {
		return nil
	}
	from, to := o.in, o.out
	if !away {
		from, to = o.out, o.in
	}
	if err := os.Rename(from, to); err != nil {
		return fmt.Errorf("softhsm outage: %w", err)
	}
	o.away = away
	return nil
}
