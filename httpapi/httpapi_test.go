package httpapi

import (
	"strings"
	"testing"

	"github.com/credfactory/credfactory/apierr"
)

// TestDecodeNamesFieldsInAPITerms: a JSON body of the wrong shape is told
// by its JSON path and JSON types, never by Go struct paths, Go type names
// or the decoder's "json:" prefix.
func TestDecodeNamesFieldsInAPITerms(t *testing.T) {
	type proof struct {
		ClaimCode string `json:"claimCode"`
		Nonce     []byte `json:"signedNonce"`
	}
	type enrol struct {
		Proof  proof    `json:"proof"`
		SUIDs  []int    `json:"suids"`
		Reason string   `json:"reason"`
		Tags   []string `json:"tags"`
	}
	tests := []struct {
		body, want string
	}{
		{`{"proof":{"claimCode":5}}`, `"proof.claimCode" must be a string, not number`},
		{`{"suids":["x"]}`, `"suids" must be an integer, not string`},
		{`{"suids":{}}`, `"suids" must be an array, not object`},
		{`{"proof":"code"}`, `"proof" must be an object, not string`},
		{`{"unknown":1}`, `unknown field "unknown"`},
		{`{"proof":`, `the JSON ends too early`},
		{`{"proof":}`, `invalid character '}' looking for beginning of value (at byte 10)`},
		{`[]`, `want an object, not array`},
	}
	for _, tt := range tests {
		var v enrol
		err := Decode([]byte(tt.body), &v)
		e := apierr.As(err)
		if err == nil || e.Status != 400 || !strings.Contains(e.Message, tt.want) {
			t.Errorf("%s: %v, want 400 saying %q", tt.body, err, tt.want)
			continue
		}
		for _, leak := range []string{"Go ", "struct", "httpapi", "enrol.", "Proof.", "json:"} {
			if strings.Contains(e.Message, leak) {
				t.Errorf("%s: %q names %q", tt.body, e.Message, leak)
			}
		}
	}
}
