package kdf

import (
	"strconv"
	"testing"
)

// A stored derivation context comes back from the database; an ID comes in
// a URL. Neither decoder may panic, and what parses must round-trip.

func FuzzUnmarshalContext(f *testing.F) {
	for _, c := range []Context{KpsaContext("00112233445566778899aabbccddeeff@mef.sp.example", "Sdev"),
		KucContext("00112233445566778899aabbccddeeff@mef.sp.example", SUIDRSPFESPrim, "cse.sp.example")} {
		raw, _ := c.Marshal()
		f.Add(raw)
	}
	f.Add([]byte(`{"version":1,"kind":"km"}`))
	f.Add([]byte(`{"version":1,"kind":"kuc","keId":"00112233445566778899aabbccddeeff@mef.sp.example","suid":23,"root":"exporter","sealedKe":"AAAA"}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := UnmarshalContext(raw)
		if err != nil {
			return
		}
		again, err := c.Marshal()
		if err != nil {
			t.Fatalf("accepted context does not marshal: %v", err)
		}
		if _, err := UnmarshalContext(again); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParseIDs(f *testing.F) {
	f.Add("12-0a0b@mef.sp.example", "00112233445566778899aabbccddeeff@mef.sp.example", "22")
	f.Add("x", "@", "007")
	f.Fuzz(func(t *testing.T, credID, keID, suid string) {
		if typ, value, err := ParseCredentialID(credID); err == nil && CredentialID(typ, value) != credID {
			t.Fatalf("credential ID %q round-trips to %q", credID, CredentialID(typ, value))
		}
		_, _, _ = ParseKeID(keID)
		// Kuc hashes the SUID's decimal spelling, so only the canonical
		// spelling of a known SUID may be accepted ("022" would derive a
		// different key for usage 22).
		if s, err := ParseSUID(suid); err == nil && (!s.Valid() || strconv.Itoa(int(s)) != suid) {
			t.Fatalf("accepted %q as SUID %d", suid, s)
		}
	})
}
