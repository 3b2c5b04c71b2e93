package kdf_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/credfactory/credfactory/kdf"
)

const (
	testKeID   = "00112233445566778899aabbccddeeff@mef.sp.example"
	testMaster = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
)

func TestContextJSON(t *testing.T) {
	for _, c := range []struct {
		c    kdf.Context
		json string
	}{
		{kdf.KmContext(testKeID, "maf.sp.example"),
			`{"version":1,"kind":"km","keId":"` + testKeID + `","mafId":"maf.sp.example"}`},
		{kdf.KpsaContext(testKeID, "S0001-device"),
			`{"version":1,"kind":"kpsa","keId":"` + testKeID + `","enroleeId":"S0001-device"}`},
		{kdf.KucContext(testKeID, kdf.SUIDRSPFSAEF, "cse.sp.example"),
			`{"version":1,"kind":"kuc","keId":"` + testKeID + `","targetFqdn":"cse.sp.example","suid":22}`},
		{kdf.KpsaContext(testKeID, "Sﬁeld-ｓｅｎｓｏｒ-１"),
			`{"version":1,"kind":"kpsa","keId":"` + testKeID + `","enroleeId":"Sﬁeld-ｓｅｎｓｏｒ-１"}`},
	} {
		js, err := c.c.Marshal()
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", c.c, err)
		}
		if string(js) != c.json {
			t.Errorf("Marshal = %s\n want %s", js, c.json)
		}
		back, err := kdf.UnmarshalContext(js)
		if err != nil {
			t.Fatalf("UnmarshalContext(%s): %v", js, err)
		}
		if back != c.c {
			t.Errorf("round trip: %+v, want %+v", back, c.c)
		}
	}
}

func TestUnmarshalContextStrict(t *testing.T) {
	k := `"keId":"` + testKeID + `"`
	good := []string{
		`{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example"}`,
		" \n{\"suid\":22,\"targetFqdn\":\"cse.sp.example\",\"kind\":\"kuc\"," + k + ",\"version\":1}\n ",
		// Kuc is derived per Target: the context need not name one.
		`{"version":1,"kind":"kuc",` + k + `,"suid":22}`,
		`{"version":1,"kind":"kuc",` + k + `,"suid":22,"root":"exporter","sealedKe":"AAAA"}`,
	}
	for _, s := range good {
		if _, err := kdf.UnmarshalContext([]byte(s)); err != nil {
			t.Errorf("UnmarshalContext(%s): %v", s, err)
		}
	}
	bad := map[string]string{
		"empty":              ``,
		"null":               `null`,
		"array":              `[]`,
		"string":             `"km"`,
		"truncated":          `{"version":1,"kind":"km",` + k,
		"unknown field":      `{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example","key":"00"}`,
		"case-variant field": `{"version":1,"kind":"km","KeId":"` + testKeID + `","mafId":"maf.sp.example"}`,
		"repeated field":     `{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example","mafId":"other.sp.example"}`,
		"trailing object":    `{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example"}{}`,
		"trailing garbage":   `{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example"} x`,
		"no version":         `{"kind":"km",` + k + `,"mafId":"maf.sp.example"}`,
		"version 2":          `{"version":2,"kind":"km",` + k + `,"mafId":"maf.sp.example"}`,
		"version string":     `{"version":"1","kind":"km",` + k + `,"mafId":"maf.sp.example"}`,
		"no kind":            `{"version":1,` + k + `,"mafId":"maf.sp.example"}`,
		"kind upper":         `{"version":1,"kind":"KM",` + k + `,"mafId":"maf.sp.example"}`,
		"kind unknown":       `{"version":1,"kind":"kpm",` + k + `,"mafId":"maf.sp.example"}`,
		"no keId":            `{"version":1,"kind":"km","mafId":"maf.sp.example"}`,
		"keId upper":         `{"version":1,"kind":"km","keId":"00112233445566778899AABBCCDDEEFF@mef.sp.example","mafId":"maf.sp.example"}`,
		"keId fqdn upper":    `{"version":1,"kind":"km","keId":"00112233445566778899aabbccddeeff@MEF.sp.example","mafId":"maf.sp.example"}`,
		"keId short":         `{"version":1,"kind":"km","keId":"0011@mef.sp.example","mafId":"maf.sp.example"}`,
		"km no mafId":        `{"version":1,"kind":"km",` + k + `}`,
		"km empty mafId":     `{"version":1,"kind":"km",` + k + `,"mafId":""}`,
		"km with enroleeId":  `{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example","enroleeId":"S1"}`,
		"km with suid":       `{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example","suid":22}`,
		"kpsa no enroleeId":  `{"version":1,"kind":"kpsa",` + k + `}`,
		"kpsa with target":   `{"version":1,"kind":"kpsa",` + k + `,"enroleeId":"S1","targetFqdn":"cse.sp.example"}`,
		"kuc no suid":        `{"version":1,"kind":"kuc",` + k + `,"targetFqdn":"cse.sp.example"}`,
		"kuc unknown suid":   `{"version":1,"kind":"kuc",` + k + `,"targetFqdn":"cse.sp.example","suid":99}`,
		"kuc suid string":    `{"version":1,"kind":"kuc",` + k + `,"targetFqdn":"cse.sp.example","suid":"22"}`,
		"kuc suid fraction":  `{"version":1,"kind":"kuc",` + k + `,"targetFqdn":"cse.sp.example","suid":22.5}`,
		"unknown root":       `{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example","root":"tls"}`,
		"exporter no ke":     `{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example","root":"exporter"}`,
		"exporter bad ke":    `{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example","root":"exporter","sealedKe":"not base64!"}`,
		"master with ke":     `{"version":1,"kind":"km",` + k + `,"mafId":"maf.sp.example","sealedKe":"AAAA"}`,
		"kuc bad target":     `{"version":1,"kind":"kuc",` + k + `,"targetFqdn":"cse_1","suid":22}`,
		"kuc with mafId":     `{"version":1,"kind":"kuc",` + k + `,"targetFqdn":"cse.sp.example","suid":22,"mafId":"maf.sp.example"}`,
	}
	for name, s := range bad {
		if c, err := kdf.UnmarshalContext([]byte(s)); !errors.Is(err, kdf.ErrBadContext) {
			t.Errorf("%s: UnmarshalContext(%s) = %+v, %v; want ErrBadContext", name, s, c, err)
		}
	}
}

func TestContextValidate(t *testing.T) {
	// What JSON cannot carry (invalid UTF-8 becomes U+FFFD on decode) is
	// still refused when a caller builds a Context by hand.
	bad := map[string]kdf.Context{
		"zero":             {},
		"mafId not UTF-8":  kdf.KmContext(testKeID, "maf\xff.sp.example"),
		"enrolee not UTF8": kdf.KpsaContext(testKeID, "S\xff"),
		"kuc cert suid 0":  kdf.KucContext(testKeID, 0, "cse.sp.example"),
	}
	for name, c := range bad {
		if err := c.Validate(); !errors.Is(err, kdf.ErrBadContext) {
			t.Errorf("%s: Validate = %v, want ErrBadContext", name, err)
		}
		if _, err := c.Marshal(); !errors.Is(err, kdf.ErrBadContext) {
			t.Errorf("%s: Marshal err = %v, want ErrBadContext", name, err)
		}
		if _, err := c.Derive(context.Background(), newSoftMaster(t, testMaster)); !errors.Is(err, kdf.ErrBadContext) {
			t.Errorf("%s: Derive err = %v, want ErrBadContext", name, err)
		}
	}
	// A bad KeID is both a bad context and a bad ID.
	err := kdf.KmContext("nope", "maf.sp.example").Validate()
	if !errors.Is(err, kdf.ErrBadContext) || !errors.Is(err, kdf.ErrBadID) {
		t.Errorf("bad KeID: %v, want ErrBadContext and ErrBadID", err)
	}
}

func TestContextDerive(t *testing.T) {
	ctx := context.Background()
	m := newRecordingMaster(t, testMaster)
	c := kdf.KucContext(testKeID, kdf.SUIDRSPFSAEF, "cse.sp.example")
	k1, err := c.Derive(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	// The HSM sees our label and the KeID bytes, nothing else.
	if len(m.calls) != 1 || m.calls[0] != (masterCall{kdf.LabelEnrolmentRoot, testKeID}) {
		t.Fatalf("master calls %+v", m.calls)
	}
	// Deterministic: a second retrieval gives the same key.
	k2, err := c.Derive(ctx, m)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second Derive = %x, %v; first %x", k2, err, k1)
	}

	// Every input changes the key; kinds never collide.
	seen := map[string]string{}
	for name, c := range map[string]kdf.Context{
		"kuc":          c,
		"kuc suid":     kdf.KucContext(testKeID, kdf.SUIDMAFSAEF, "cse.sp.example"),
		"kuc target":   kdf.KucContext(testKeID, kdf.SUIDRSPFSAEF, "cse2.sp.example"),
		"kuc keId":     kdf.KucContext("ffeeddccbbaa99887766554433221100@mef.sp.example", kdf.SUIDRSPFSAEF, "cse.sp.example"),
		"km":           kdf.KmContext(testKeID, "cse.sp.example"),
		"kpsa":         kdf.KpsaContext(testKeID, "cse.sp.example"),
		"kpsa enrolee": kdf.KpsaContext(testKeID, "S0001"),
	} {
		k, err := c.Derive(ctx, m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(k) != kdf.KeySize {
			t.Errorf("%s: %d-byte key", name, len(k))
		}
		if other, dup := seen[string(k)]; dup {
			t.Errorf("%s and %s derive the same key", name, other)
		}
		seen[string(k)] = name
	}
}

func TestContextDeriveMasterErrors(t *testing.T) {
	c := kdf.KmContext(testKeID, "maf.sp.example")
	hsmDown := errors.New("CKR_DEVICE_ERROR")
	for name, tc := range map[string]struct {
		m    kdf.Master
		ctx  context.Context
		want error
	}{
		"master error": {funcMaster(func(context.Context, string, []byte) ([]byte, error) { return nil, hsmDown }), context.Background(), hsmDown},
		"cancelled":    {newSoftMaster(t, testMaster), cancelled(), context.Canceled},
		"short key": {funcMaster(func(context.Context, string, []byte) ([]byte, error) {
			return make([]byte, 16), nil
		}), context.Background(), nil},
	} {
		k, err := c.Derive(tc.ctx, tc.m)
		if err == nil || k != nil {
			t.Errorf("%s: Derive = %x, %v; want an error", name, k, err)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: err %v does not wrap %v", name, err, tc.want)
		}
		if errors.Is(err, kdf.ErrBadContext) {
			t.Errorf("%s: a master failure is not a bad context: %v", name, err)
		}
	}
}

func TestEnrolmentKeyCanonicalKeID(t *testing.T) {
	m := newRecordingMaster(t, testMaster)
	for _, id := range []string{
		"00112233445566778899AABBCCDDEEFF@mef.sp.example",
		"00112233445566778899aabbccddeeff@Mef.sp.example",
		"x@mef.sp.example",
	} {
		if _, err := kdf.EnrolmentKey(context.Background(), m, id); !errors.Is(err, kdf.ErrBadID) {
			t.Errorf("EnrolmentKey(%q) err = %v, want ErrBadID", id, err)
		}
	}
	if len(m.calls) != 0 {
		t.Errorf("master called for bad KeIDs: %+v", m.calls)
	}
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
