package crlreason

import "testing"

func TestCodesAndNames(t *testing.T) {
	for _, tt := range []struct {
		code      int
		name      string
		revocable bool
	}{
		{0, "unspecified", true}, {1, "keyCompromise", true}, {2, "cACompromise", true},
		{3, "affiliationChanged", true}, {4, "superseded", true}, {5, "cessationOfOperation", true},
		{6, "certificateHold", true}, {7, "", false}, {8, "", false}, {9, "privilegeWithdrawn", true},
		{10, "aACompromise", true}, {11, "", false}, {-1, "", false},
	} {
		if got := Revocable(tt.code); got != tt.revocable {
			t.Errorf("Revocable(%d) = %v", tt.code, got)
		}
		if got := Name(tt.code); got != tt.name {
			t.Errorf("Name(%d) = %q, want %q", tt.code, got, tt.name)
		}
		if tt.name != "" {
			if code, ok := Parse(tt.name); !ok || code != tt.code {
				t.Errorf("Parse(%q) = %d, %v", tt.name, code, ok)
			}
		}
		want := tt.code
		if !tt.revocable {
			want = Unspecified
		}
		if got := Normalize(&tt.code); got != want {
			t.Errorf("Normalize(%d) = %d, want %d", tt.code, got, want)
		}
	}
	if code, ok := Parse(""); !ok || code != Unspecified {
		t.Errorf(`Parse("") = %d, %v`, code, ok)
	}
	if _, ok := Parse("removeFromCRL"); ok {
		t.Error("removeFromCRL parsed as a reason to revoke")
	}
	if Normalize(nil) != Unspecified {
		t.Error("Normalize(nil)")
	}
	if n := Names(); len(n) != 9 || n[0] != "unspecified" || n[8] != "aACompromise" {
		t.Errorf("Names() = %v", n)
	}
}
