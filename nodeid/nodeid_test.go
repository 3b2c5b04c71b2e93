package nodeid

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"urn:gsma:imei:90420156-025763-0;svn=42", "urn:gsma:imei:90420156-025763-0"},
		{"urn:gsma:IMEI:90420156-025763-0", "urn:gsma:imei:90420156-025763-0"},
		{"URN:GSMA:Imei:90420156-025763-0;SVN=01", "urn:gsma:imei:90420156-025763-0"},
		{"URN:GSMA:imei:90420156-025763-0", "urn:gsma:imei:90420156-025763-0"},
		{"urn:uuid:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6", "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"},
		{"urn:dev:ow:10e2073a01080063", "urn:dev:ow:10e2073a01080063"},
		{"urn:dev:mac:0024befffe804ff1", "urn:dev:mac:0024befffe804ff1"},
		{"urn:example:a%2fb", "urn:example:a%2Fb"},
		{"1.2.410.200074.1.1.1", "urn:oid:1.2.410.200074.1.1.1"},
		{"urn:oid:0.2.481.1.100.3030.10011", "urn:oid:0.2.481.1.100.3030.10011"},
	} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			continue
		}
		if again, err := Parse(got); err != nil || again != got {
			t.Errorf("Parse(%q) is not idempotent: %q, %v", got, again, err)
		}
		u, err := URI(got)
		if err != nil || u.String() != got || u.Scheme != "urn" || u.Host != "" {
			t.Errorf("URI(%q) = %v, %v", got, u, err)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, in := range []string{
		"",
		"Sdevice1",                              // an AE-ID
		"https://sp.example/node1",              // a URL with a host
		"//sp.example/node1",                    // oneM2M's scheme-less absolute form
		"urn:x:abc",                             // NID too short
		"urn:-ab:abc",                           // NID starts with '-'
		"urn:" + strings.Repeat("a", 33) + ":x", // NID too long
		"urn:example:",                          // empty NSS
		"urn:example:/abc",                      // NSS starts with '/'
		"urn:example:a b",                       // space
		"urn:example:a\x00b",                    // NUL
		"urn:example:a?=q",                      // q-component
		"urn:example:a#frag",                    // f-component
		"urn:example:a%2",                       // broken percent-encoding
		"urn:example:a%zz",                      // broken percent-encoding
		"urn:example:*",                         // wildcard
		"urn:example:é",                         // non-ASCII
		"urn:oid:1.02.3",                        // leading zero
		"urn:oid:abc",                           // not an OID
		"urn:gsma:imei:9042015-025763-0",        // short TAC
		"urn:gsma:imei:90420156-025763-0;svn=4",
		"urn:gsma:IMEI:not-an-imei", // the literal in another case is still an IMEI
		"urn:uuid:not-a-uuid",
		"3.1.2", // first arc > 2
		"1",     // one arc
		"urn:example:" + strings.Repeat("a", MaxLen), // too long
	} {
		if got, err := Parse(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q) = %q, %v; want ErrInvalid", in, got, err)
		}
	}
	if _, err := URI("URN:example:a"); err == nil {
		t.Error("URI accepts a non-canonical Node-ID")
	}
}
