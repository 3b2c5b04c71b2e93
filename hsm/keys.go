package hsm

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/miekg/pkcs11"
)

// keyHandle caches an object handle for the epoch it was found in. Handles
// are only valid while the sessions and login that produced them live, so a
// new epoch means one lookup again; every other call reuses the handle
// (C_FindObjects per request would cost more than the signature).
type keyHandle struct {
	ref    KeyRef
	class  uint
	cached atomic.Pointer[cachedHandle]
}

type cachedHandle struct {
	epoch uint64
	h     pkcs11.ObjectHandle
}

func (m *Module) newKeyHandle(uri string, class KeyClass) (*keyHandle, error) {
	ref, err := ParseKeyURI(uri)
	if err != nil {
		return nil, err
	}
	if ref.Class != class {
		return nil, fmt.Errorf("key URI %s: want type=%s, got type=%s", ref, class, ref.Class)
	}
	if ref.Token != "" && m.cfg.TokenLabel != "" && ref.Token != m.cfg.TokenLabel {
		return nil, fmt.Errorf("key URI %s names token %q, but the configured token is %q", ref, ref.Token, m.cfg.TokenLabel)
	}
	k := &keyHandle{ref: ref, class: pkcs11.CKO_PRIVATE_KEY}
	if class == ClassSecret {
		k.class = pkcs11.CKO_SECRET_KEY
	}
	return k, nil
}

func (k *keyHandle) handle(m *Module, s session) (pkcs11.ObjectHandle, error) {
	if c := k.cached.Load(); c != nil && c.epoch == s.epoch {
		return c.h, nil
	}
	h, err := m.findObject(s, k.class, k.ref)
	if err != nil {
		return 0, err
	}
	if m.cfg.SessionKeys {
		// A session copy keeps every protection of the token object
		// (sensitive, non-extractable cannot be relaxed by C_CopyObject) but
		// spares SoftHSM its file I/O on each use. It lives as long as
		// session s, which is closed only when the epoch changes, so the
		// copy is made once per epoch. A module that refuses (CKA_COPYABLE
		// false, no session memory) keeps using the token object.
		if c, err := m.lib.ctx.CopyObject(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false)}); err == nil {
			h = c
		}
	}
	// A caller on an older epoch must not displace the current epoch's
	// handle; concurrent misses in one epoch may each make a copy, which
	// lives only as long as its session.
	for {
		old := k.cached.Load()
		if old != nil && old.epoch > s.epoch {
			break
		}
		if k.cached.CompareAndSwap(old, &cachedHandle{epoch: s.epoch, h: h}) {
			break
		}
	}
	return h, nil
}

// findObject finds exactly one object of class by the label and ID of ref.
func (m *Module) findObject(s session, class uint, ref KeyRef) (pkcs11.ObjectHandle, error) {
	// CKA_TOKEN: the session copies made by handle() carry the same class,
	// label and ID, and must never make the token object look ambiguous.
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true)}
	if ref.Label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, ref.Label))
	}
	if len(ref.ID) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, ref.ID))
	}
	ctx := m.lib.ctx
	if err := ctx.FindObjectsInit(s.h, tmpl); err != nil {
		return 0, fmt.Errorf("find %s: %w", ref, err)
	}
	hs, _, err := ctx.FindObjects(s.h, 2)
	if ferr := ctx.FindObjectsFinal(s.h); err == nil {
		err = ferr
	}
	if err != nil {
		return 0, fmt.Errorf("find %s: %w", ref, err)
	}
	switch len(hs) {
	case 0:
		return 0, fmt.Errorf("%w: %s", ErrKeyNotFound, ref)
	case 1:
		return hs[0], nil
	}
	return 0, fmt.Errorf("key %s is ambiguous: more than one object matches; add id= to the URI", ref)
}

// single runs a single-part operation (init + one call) with the key, the
// shape every operation here has, so no session is held between calls.
func (m *Module) single(ctx context.Context, op string, k *keyHandle, run func(s session, h pkcs11.ObjectHandle) error) error {
	return m.do(ctx, op, func(s session) error {
		h, err := k.handle(m, s)
		if err != nil {
			return err
		}
		return run(s, h)
	})
}
