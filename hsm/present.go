package hsm

import (
	"context"
	"errors"

	"github.com/miekg/pkcs11"
)

// KeysPresent checks that each key URI still names exactly one object on
// the token itself (not a session copy this process made): a readiness
// check, so that a replica whose token lacks a key its peers have (an HSM
// partition the key was never cloned to, a key deleted under a running
// process) stops taking traffic, and the error names each missing key.
func (m *Module) KeysPresent(ctx context.Context, uris []string) error {
	refs := make([]KeyRef, len(uris))
	for i, u := range uris {
		ref, err := ParseKeyURI(u)
		if err != nil {
			return err
		}
		refs[i] = ref
	}
	return m.do(ctx, "keys_present", func(s session) error {
		var missing []error
		for _, ref := range refs {
			class := uint(pkcs11.CKO_PRIVATE_KEY)
			if ref.Class == ClassSecret {
				class = pkcs11.CKO_SECRET_KEY
			}
			if _, err := m.findObject(s, class, ref); err != nil {
				missing = append(missing, err)
			}
		}
		return errors.Join(missing...)
	})
}
