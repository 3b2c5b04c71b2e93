package tlsticket

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"time"
)

// Label separates ticket keys from every other derivation with the same
// HSM key: the enrolment root (kdf.LabelEnrolmentRoot) and claim codes
// have labels of their own, each ended by 0x00, so no input of one is an
// input of another.
const Label = "credfactory TLS session ticket key"

// Period is how long one key seals new tickets. A ticket opens for up to
// one more period after that (the previous key is kept), so a session
// resumes for one to two days; Go refuses tickets older than seven days
// whatever the key.
const Period = 24 * time.Hour

// Deriver is the HSM's HMAC key (hsm.HMACKey).
type Deriver interface {
	Sum(ctx context.Context, data []byte) ([]byte, error)
}

// Keys returns the ticket keys at now, the current period's first: it
// seals new tickets (tls.Config.SetSessionTicketKeys). The previous
// period's opens tickets sealed before the rotation, and the next period's
// those of a replica whose clock is ahead of this one's.
func Keys(ctx context.Context, d Deriver, now time.Time) ([][32]byte, error) {
	n := now.UnixNano() / int64(Period)
	keys := make([][32]byte, 0, 3)
	for _, p := range []int64{n, n - 1, n + 1} {
		msg := binary.BigEndian.AppendUint64(append([]byte(Label), 0), uint64(p))
		sum, err := d.Sum(ctx, msg)
		if err != nil {
			return nil, fmt.Errorf("tls ticket key: %w", err)
		}
		if len(sum) != 32 {
			return nil, fmt.Errorf("tls ticket key: %d-byte HMAC, want 32", len(sum))
		}
		keys = append(keys, [32]byte(sum))
	}
	return keys, nil
}

// Set installs the keys at now in cfg. Go then stops rotating its own
// random keys, so Keep must follow.
func Set(ctx context.Context, cfg *tls.Config, d Deriver, now time.Time) error {
	keys, err := Keys(ctx, d, now)
	if err != nil {
		return err
	}
	cfg.SetSessionTicketKeys(keys)
	return nil
}

// Keep rotates cfg's keys at each period boundary until ctx ends; report
// hears of a rotation that failed (the HSM unreachable), after which the
// old keys stay and it tries again a minute later. Call Set first.
func Keep(ctx context.Context, cfg *tls.Config, d Deriver, report func(error)) {
	for {
		now := time.Now()
		wait := time.Duration(int64(Period) - now.UnixNano()%int64(Period))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		for {
			err := Set(ctx, cfg, d, time.Now())
			if err == nil || ctx.Err() != nil {
				break
			}
			report(err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Minute):
			}
		}
	}
}
