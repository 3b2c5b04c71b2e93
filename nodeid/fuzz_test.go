package nodeid

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzParse: whatever a device owner sends, Parse answers ErrInvalid or a
// canonical Node-ID: at most MaxLen bytes, a URN that url.Parse reads back
// with its scheme (the certificate's subjectAltName URI), and a fixed
// point (parsing it again changes nothing).
func FuzzParse(f *testing.F) {
	for _, s := range []string{"urn:gsma:imei:90420156-025763-0;svn=42", "1.2.410.200074.1.1.1",
		"URN:UUID:6E8BC430-9C3A-11D9-9669-0800200C9A66", "urn:dev:mac:0024befffe804ff1", "urn:oid:1.2.3",
		"urn:example:a%2fb", "urn:x:?q", strings.Repeat("1.", 127) + "1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := Parse(s)
		if err != nil {
			return
		}
		if len(got) > MaxLen {
			t.Fatalf("Parse(%q) = %d bytes, more than MaxLen", s, len(got))
		}
		u, err := url.Parse(got)
		if err != nil || u.Scheme != "urn" {
			t.Fatalf("Parse(%q) = %q, which url.Parse reads as %v, %v", s, got, u, err)
		}
		again, err := Parse(got)
		if err != nil || again != got {
			t.Fatalf("Parse(%q) = %q, but Parse(%q) = %q, %v", s, got, got, again, err)
		}
	})
}
