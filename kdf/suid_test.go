package kdf_test

import (
	"errors"
	"testing"

	"github.com/credfactory/credfactory/kdf"
)

func TestSUIDSets(t *testing.T) {
	// docs/onem2m.md "Usage codes".
	valid := map[int]bool{}
	for _, n := range []int{10, 11, 12, 13, 14, 15, 21, 22, 23, 24, 25, 32, 33, 34, 35, 40, 41, 42, 43} {
		valid[n] = true
	}
	reset := map[int]bool{}
	for _, n := range []int{12, 22, 32, 42, 13, 23, 33, 43, 14, 15, 24, 25, 34, 35} {
		reset[n] = true
	}
	for n := -1; n <= 100; n++ {
		s := kdf.SUID(n)
		if got := s.Valid(); got != valid[n] {
			t.Errorf("SUID(%d).Valid() = %v, want %v", n, got, valid[n])
		}
		if got := kdf.FactoryResetRemoves(s); got != reset[n] {
			t.Errorf("FactoryResetRemoves(%d) = %v, want %v", n, got, reset[n])
		}
	}
	// The named constants carry the codes docs/onem2m.md gives them.
	for _, c := range []struct {
		s    kdf.SUID
		n    int
		name string
	}{
		{kdf.SUIDPreMEF, 10, "pre-provisioned MEF"},
		{kdf.SUIDPreMAF, 11, "pre-provisioned MAF"},
		{kdf.SUIDPreSAEF, 12, "pre-provisioned SAEF"},
		{kdf.SUIDPreESPrim, 13, "pre-provisioned ESPrim"},
		{kdf.SUIDPreESDataEncryption, 14, "pre-provisioned ESData encryption"},
		{kdf.SUIDPreESDataSignature, 15, "pre-provisioned ESData signature"},
		{kdf.SUIDRSPFMAF, 21, "RSPF-provisioned MAF"},
		{kdf.SUIDRSPFSAEF, 22, "RSPF-provisioned SAEF"},
		{kdf.SUIDRSPFESPrim, 23, "RSPF-provisioned ESPrim"},
		{kdf.SUIDRSPFESDataEncryption, 24, "RSPF-provisioned ESData encryption"},
		{kdf.SUIDRSPFESDataSignature, 25, "RSPF-provisioned ESData signature"},
		{kdf.SUIDMAFSAEF, 32, "MAF-distributed SAEF"},
		{kdf.SUIDMAFESPrim, 33, "MAF-distributed ESPrim"},
		{kdf.SUIDMAFESDataEncryption, 34, "MAF-distributed ESData encryption"},
		{kdf.SUIDMAFESDataSignature, 35, "MAF-distributed ESData signature"},
		{kdf.SUIDCertMEF, 40, "certificate MEF"},
		{kdf.SUIDCertMAF, 41, "certificate MAF"},
		{kdf.SUIDCertSAEF, 42, "certificate SAEF"},
		{kdf.SUIDCertESPrim, 43, "certificate ESPrim"},
	} {
		if int(c.s) != c.n || c.s.String() != c.name {
			t.Errorf("SUID %d %q, want %d %q", int(c.s), c.s.String(), c.n, c.name)
		}
	}
	if got := kdf.SUID(99).String(); got != "SUID(99)" {
		t.Errorf("SUID(99).String() = %q", got)
	}
}

func TestParseSUID(t *testing.T) {
	for _, c := range []struct {
		in   string
		want kdf.SUID
	}{
		{"10", kdf.SUIDPreMEF}, {"22", kdf.SUIDRSPFSAEF}, {"35", kdf.SUIDMAFESDataSignature}, {"43", kdf.SUIDCertESPrim},
	} {
		if got, err := kdf.ParseSUID(c.in); err != nil || got != c.want {
			t.Errorf("ParseSUID(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, s := range []string{"", "0", "022", "+22", "-22", "2 2", " 22", "22 ", "99", "16", "31", "1e1", "0x16", "２２"} {
		if _, err := kdf.ParseSUID(s); !errors.Is(err, kdf.ErrBadID) {
			t.Errorf("ParseSUID(%q) err = %v, want ErrBadID", s, err)
		}
	}
}
