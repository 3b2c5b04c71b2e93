package hsm

import (
	"context"
	"time"

	"github.com/miekg/pkcs11"
)

// HoldSession takes one pooled session until release is called, so a test
// can exhaust the pool without racing real operations.
func (m *Module) HoldSession(ctx context.Context) (release func(), err error) {
	held := make(chan struct{})
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- m.do(ctx, "hold", func(session) error {
			close(held)
			<-done
			return nil
		})
	}()
	select {
	case <-held:
		return func() { close(done); <-errc }, nil
	case err := <-errc:
		return nil, err
	}
}

// ImportSecret creates a session secret key with a known value, so tests can
// check the HSM's HMAC and AES-GCM against Go's. Production keys are never
// imported: they are generated non-extractable in the token.
func (m *Module) ImportSecret(ctx context.Context, label string, keyType uint, value []byte) error {
	return m.do(ctx, "import", func(s session) error {
		_, err := m.lib.ctx.CreateObject(s.h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE, value),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
			pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		})
		return err
	})
}

// Slot is the slot the module found the token in.
func (m *Module) Slot() uint {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.slot
}

// DoFailOnceThen runs an operation whose first attempt fails with code
// (as if the HSM had answered it), then calls between and succeeds: fault
// injection for the recovery paths a real SoftHSM cannot be made to take.
func (m *Module) DoFailOnceThen(ctx context.Context, code uint, between func()) error {
	n := 0
	return m.do(ctx, "inject", func(s session) error {
		n++
		if n == 1 {
			return pkcs11.Error(code)
		}
		between()
		return nil
	})
}

// OnToken reports whether the handle the signer's operations use is the
// token object itself (CKA_TOKEN true) or a session copy (false).
func (s *Signer) OnToken(ctx context.Context) (onToken bool, err error) {
	err = s.m.single(ctx, "probe", s.key, func(ss session, h pkcs11.ObjectHandle) error {
		attrs, err := s.m.lib.ctx.GetAttributeValue(ss.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil)})
		if err != nil {
			return err
		}
		onToken = len(attrs) == 1 && len(attrs[0].Value) == 1 && attrs[0].Value[0] != 0
		return nil
	})
	return onToken, err
}

// SetReinitGap sets the least time between two re-initialisations.
func (m *Module) SetReinitGap(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reinitGap = d
}

// ImportedSecretLeaks imports value as HMACSealed does and reports what a
// caller could learn of it: the CKA_VALUE read's error, and CKA_EXTRACTABLE
// and CKA_SENSITIVE as stored.
func (m *Module) ImportedSecretLeaks(ctx context.Context, value []byte) (readErr error, extractable, sensitive bool, err error) {
	err = m.do(ctx, "probe_import", func(s session) error {
		c := m.lib.ctx
		h, err := c.CreateObject(s.h, sessionSecretTemplate(value))
		if err != nil {
			return err
		}
		defer func() { _ = c.DestroyObject(s.h, h) }()
		_, readErr = c.GetAttributeValue(s.h, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		attrs, err := c.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil)})
		if err != nil {
			return err
		}
		extractable = len(attrs[0].Value) == 1 && attrs[0].Value[0] != 0
		sensitive = len(attrs[1].Value) == 1 && attrs[1].Value[0] != 0
		return nil
	})
	return readErr, extractable, sensitive, err
}
