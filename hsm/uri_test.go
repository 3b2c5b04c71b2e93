package hsm_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/hsm"
)

func TestParseKeyURI(t *testing.T) {
	tests := []struct {
		in      string
		label   string
		id      []byte
		class   hsm.KeyClass
		wantErr string
	}{
		{in: "pkcs11:object=ca-root;type=private", label: "ca-root", class: hsm.ClassPrivate},
		{in: "pkcs11:token=credfactory;object=kdf;type=secret-key", label: "kdf", class: hsm.ClassSecret},
		{in: "pkcs11:id=%01%02%ff;type=private", id: []byte{1, 2, 0xff}, class: hsm.ClassPrivate},
		{in: "pkcs11:object=my%20key;type=private?module-path=/usr/lib/x.so", label: "my key", class: hsm.ClassPrivate},
		{in: "pkcs11:object=k;type=cert", wantErr: "not a private or secret key"},
		{in: "pkcs11:object=k", wantErr: "missing type"},
		{in: "pkcs11:type=private", wantErr: "names no object"},
		{in: "file:///k.pem", wantErr: "not a pkcs11: URI"},
		{in: "pkcs11:object=k;type=private;colour=red", wantErr: "unknown attribute"},
		{in: "pkcs11:object=k;type=private?pin-value=1234", wantErr: "pin-value is refused"},
		{in: "pkcs11:object=%zz;type=private", wantErr: "object"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			ref, err := hsm.ParseKeyURI(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "1234") {
					t.Fatalf("error leaks the PIN: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ref.Label != tc.label || !bytes.Equal(ref.ID, tc.id) || ref.Class != tc.class {
				t.Fatalf("got %+v", ref)
			}
		})
	}
}
