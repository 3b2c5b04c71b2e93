package kdf_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/credfactory/credfactory/kdf"
)

var rel16 = []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}

func TestKeID(t *testing.T) {
	for _, c := range []struct {
		fqdn, want string
	}{
		{"mef.sp.example", "00112233445566778899aabbccddeeff@mef.sp.example"},
		{"MEF.Sp.EXAMPLE", "00112233445566778899aabbccddeeff@mef.sp.example"},
	} {
		if got := kdf.KeID(rel16, c.fqdn); got != c.want {
			t.Errorf("KeID(%q) = %q, want %q", c.fqdn, got, c.want)
		}
	}
}

func TestParseKeID(t *testing.T) {
	good := []struct {
		in, canonical string
	}{
		{"00112233445566778899aabbccddeeff@mef.sp.example", "00112233445566778899aabbccddeeff@mef.sp.example"},
		{"00112233445566778899AABBCCDDEEFF@MEF.sp.example", "00112233445566778899aabbccddeeff@mef.sp.example"},
	}
	for _, c := range good {
		rel, fqdn, err := kdf.ParseKeID(c.in)
		if err != nil {
			t.Errorf("ParseKeID(%q): %v", c.in, err)
			continue
		}
		if !bytes.Equal(rel, rel16) {
			t.Errorf("ParseKeID(%q) relative = %x", c.in, rel)
		}
		if got := kdf.KeID(rel, fqdn); got != c.canonical {
			t.Errorf("KeID(ParseKeID(%q)) = %q, want %q", c.in, got, c.canonical)
		}
	}
	bad := []string{
		"",
		"00112233445566778899aabbccddeeff",  // no '@'
		"00112233445566778899aabbccddeeff@", // no FQDN
		"@mef.sp.example",                   // no relative part
		"00112233445566778899aabbccddee@mef.sp.example",       // 15 bytes
		"00112233445566778899aabbccddeeff00@mef.sp.example",   // 17 bytes
		"0011223344556677889Xaabbccddeeff@mef.sp.example",     // not hex
		"00112233445566778899aabbccddeeff@mef",                // not qualified
		"00112233445566778899aabbccddeeff@a@mef.sp.example",   // two '@'
		"00112233445566778899aabbccddeeff@mef.sp.example.",    // trailing dot
		" 00112233445566778899aabbccddeeff@mef.sp.example",    // space
		"00112233445566778899aabbccddeeff@ｍｅｆ.sp.example",     // not an A-label
		"00112233-4455-6677-8899-aabbccddeeff@mef.sp.example", // UUID form
	}
	for _, s := range bad {
		if _, _, err := kdf.ParseKeID(s); !errors.Is(err, kdf.ErrBadID) {
			t.Errorf("ParseKeID(%q) err = %v, want ErrBadID", s, err)
		}
	}
}

var badFQDNs = []string{
	"",
	"localhost",                           // single label
	"mef..example",                        // empty label
	".mef.example",                        // empty first label
	"mef.example.",                        // trailing dot
	"-mef.example",                        // leading hyphen
	"mef-.example",                        // trailing hyphen
	"m_f.example",                         // underscore
	"mef example.com",                     // space
	"mef.example/x",                       // slash
	"10.0.0.1",                            // IPv4 address
	"mef.123",                             // numeric TLD
	"ｍａｆ.example",                         // non-ASCII
	"maf@x.example",                       // '@'
	strings.Repeat("a", 64) + ".example",  // 64-character label
	strings.Repeat("a.", 126) + "example", // 259 characters
}

func TestKpsaIDKmID(t *testing.T) {
	good := []struct {
		rel, fqdn, kpsa, km string
	}{
		{"S0001", "mef.sp.example", "S0001@mef.sp.example", "s0001@mef.sp.example"},
		{"a.b_c-D9", "Issuer.Example", "a.b_c-D9@issuer.example", "a.b_c-d9@issuer.example"},
		{"x", "3d.sp-1.example", "x@3d.sp-1.example", "x@3d.sp-1.example"},
		{"k", strings.Repeat("a", 63) + ".example", "k@" + strings.Repeat("a", 63) + ".example", "k@" + strings.Repeat("a", 63) + ".example"},
		{"k", "xn--bcher-kva.example", "k@xn--bcher-kva.example", "k@xn--bcher-kva.example"},
	}
	for _, c := range good {
		if got, err := kdf.KpsaID(c.rel, c.fqdn); err != nil || got != c.kpsa {
			t.Errorf("KpsaID(%q, %q) = %q, %v; want %q", c.rel, c.fqdn, got, err, c.kpsa)
		}
		if got, err := kdf.KmID(c.rel, c.fqdn); err != nil || got != c.km {
			t.Errorf("KmID(%q, %q) = %q, %v; want %q", c.rel, c.fqdn, got, err, c.km)
		}
	}
	badRel := []string{"", "a b", "a@b", "a/b", "é", "a+b", "a:b", "a\x00b", "ｓ"}
	for _, rel := range badRel {
		if _, err := kdf.KpsaID(rel, "mef.sp.example"); !errors.Is(err, kdf.ErrBadID) {
			t.Errorf("KpsaID(%q, ok) err = %v, want ErrBadID", rel, err)
		}
		if _, err := kdf.KmID(rel, "maf.sp.example"); !errors.Is(err, kdf.ErrBadID) {
			t.Errorf("KmID(%q, ok) err = %v, want ErrBadID", rel, err)
		}
	}
	for _, fqdn := range badFQDNs {
		if _, err := kdf.KpsaID("S1", fqdn); !errors.Is(err, kdf.ErrBadID) {
			t.Errorf("KpsaID(ok, %q) err = %v, want ErrBadID", fqdn, err)
		}
		if _, err := kdf.KmID("S1", fqdn); !errors.Is(err, kdf.ErrBadID) {
			t.Errorf("KmID(ok, %q) err = %v, want ErrBadID", fqdn, err)
		}
	}
}

func TestCredentialID(t *testing.T) {
	types := map[kdf.CredentialType]int{
		kdf.CredentialKpmID: 10, kdf.CredentialKmID: 11, kdf.CredentialKpsaID: 12,
		kdf.CredentialESPrimKey: 13, kdf.CredentialESDataEncrypt: 14, kdf.CredentialESDataSign: 15,
		kdf.CredentialESDataOther: 16, kdf.CredentialRawPublicKey: 30, kdf.CredentialDeviceCert: 31,
		kdf.CredentialCSEIDCert: 32, kdf.CredentialAEIDCert: 33, kdf.CredentialNodeIDCert: 34,
	}
	for typ, n := range types {
		if int(typ) != n {
			t.Errorf("%v = %d, want %d", typ, int(typ), n)
		}
	}
	// Exactly these codes are valid.
	for n := -1; n < 100; n++ {
		_, want := types[kdf.CredentialType(n)]
		if got := kdf.CredentialType(n).Valid(); got != want {
			t.Errorf("CredentialType(%d).Valid() = %v, want %v", n, got, want)
		}
	}
	if got := kdf.CredentialType(99).String(); got != "CredentialType(99)" {
		t.Errorf("String of unknown type = %q", got)
	}
	if got := kdf.CredentialKpsaID.String(); got != "KpsaID" {
		t.Errorf("CredentialKpsaID.String() = %q", got)
	}

	// Round trip, including values that contain '-'.
	for typ := range types {
		for _, value := range []string{"3f9a00@mef.sp.example", "s-1@maf-2.sp.example", "/cse-in-001", "Sfield-ｓｅｎｓｏｒ"} {
			id := kdf.CredentialID(typ, value)
			gotT, gotV, err := kdf.ParseCredentialID(id)
			if err != nil || gotT != typ || gotV != value {
				t.Errorf("ParseCredentialID(%q) = %v, %q, %v; want %v, %q", id, gotT, gotV, err, typ, value)
			}
		}
	}
	if got := kdf.CredentialID(kdf.CredentialKpsaID, "3f9a@mef.sp.example"); got != "12-3f9a@mef.sp.example" {
		t.Errorf("CredentialID = %q", got)
	}

	bad := []string{
		"", "12", "12-", "-12-x", "012-x", "+12-x", "1 2-x", "99-x", "17-x", "x-y",
		"12345-x", "0-x", "12-\xff", "١٢-x", // Arabic-Indic digits
	}
	for _, s := range bad {
		if _, _, err := kdf.ParseCredentialID(s); !errors.Is(err, kdf.ErrBadID) {
			t.Errorf("ParseCredentialID(%q) err = %v, want ErrBadID", s, err)
		}
	}
}

func TestNewRelativeID(t *testing.T) {
	a, err := kdf.NewRelativeID()
	if err != nil {
		t.Fatal(err)
	}
	b, err := kdf.NewRelativeID()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != kdf.RelativeIDSize || len(b) != kdf.RelativeIDSize {
		t.Fatalf("lengths %d, %d, want %d", len(a), len(b), kdf.RelativeIDSize)
	}
	if bytes.Equal(a, b) {
		t.Fatalf("two relative IDs are equal: %x", a)
	}
	id := kdf.KeID(a, "mef.sp.example")
	if rel, _, err := kdf.ParseKeID(id); err != nil || !bytes.Equal(rel, a) {
		t.Fatalf("ParseKeID(%q) = %x, %v", id, rel, err)
	}
}
