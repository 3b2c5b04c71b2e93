package nodeid

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// MaxLen bounds a canonical Node-ID, in bytes: the longest device URN of
// the registered forms is well under 100 bytes, and a subjectAltName is
// not the place for more.
const MaxLen = 255

// ErrInvalid is the kind of every refusal of Parse.
var ErrInvalid = errors.New("invalid M2M-Node-ID")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Parse checks s and returns the canonical Node-ID: "urn:" and the
// namespace identifier in lower case (RFC 8141 §3.1: both compare
// case-insensitively), percent-encodings in upper case, the namespace
// specific string otherwise as given (it compares case-sensitively); a
// bare OID becomes urn:oid:<OID>. Refused: anything not a URN or an OID,
// r-, q- and f-components (RFC 8141 §2.3: they are not part of the
// name, and a certificate names the node, not a request to a resolver),
// and more than MaxLen bytes.
func Parse(s string) (string, error) {
	c, err := parse(s)
	if err == nil && len(c) > MaxLen {
		// An OID within the bound gains its "urn:oid:" prefix.
		return "", invalid("%d bytes in canonical form, more than %d", len(c), MaxLen)
	}
	return c, err
}

func parse(s string) (string, error) {
	if s == "" {
		return "", invalid("empty")
	}
	if len(s) > MaxLen {
		return "", invalid("%d bytes, more than %d", len(s), MaxLen)
	}
	if isOID(s) {
		return "urn:oid:" + s, nil
	}
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || !strings.EqualFold(scheme, "urn") {
		return "", invalid("%q is neither a URN (urn:<NID>:<NSS>, RFC 8141) nor an OID (dotted decimal, TS-0001 Annex H)", s)
	}
	nid, nss, ok := strings.Cut(rest, ":")
	if !ok || !validNID(nid) {
		return "", invalid("%q: the namespace identifier must be 2 to 32 letters, digits and '-', starting and ending with a letter or digit (RFC 8141 §2)", s)
	}
	if strings.ContainsAny(nss, "?#") {
		return "", invalid("%q carries an r-, q- or f-component ('?', '#'), which is not part of a Node-ID", s)
	}
	nss, err := canonicalNSS(nss)
	if err != nil {
		return "", invalid("%q: %v", s, err)
	}
	nid = strings.ToLower(nid)
	switch nid {
	case "oid":
		if !isOID(nss) {
			return "", invalid("%q: urn:oid wants a dotted-decimal OID (RFC 3061)", s)
		}
	case "gsma":
		// RFC 7254's literals ("imei:", ";svn=") compare case-insensitively,
		// and the software version number is the firmware's, not the
		// device's: one handset is one Node-ID whatever its SVN, so the
		// SP-wide uniqueness of Node-IDs holds per IMEI.
		if len(nss) >= 5 && strings.EqualFold(nss[:5], "imei:") {
			imei, _, _ := strings.Cut(nss[5:], ";")
			if !validIMEI(strings.ToLower(nss[5:])) {
				return "", invalid("%q: urn:gsma:imei wants 8-6-1 digits and an optional ;svn=<2 digits> (RFC 7254)", s)
			}
			nss = "imei:" + imei
		}
	case "uuid":
		if !validUUID(nss) {
			return "", invalid("%q: urn:uuid wants 8-4-4-4-12 hex digits (RFC 9562)", s)
		}
		// RFC 9562 §4: hex digits compare case-insensitively, and are
		// written in lower case.
		nss = strings.ToLower(nss)
	}
	return "urn:" + nid + ":" + nss, nil
}

// URI is the subjectAltName URI of a canonical Node-ID.
func URI(canonical string) (*url.URL, error) {
	if c, err := Parse(canonical); err != nil {
		return nil, err
	} else if c != canonical {
		return nil, invalid("%q is not in canonical form (%q)", canonical, c)
	}
	u, err := url.Parse(canonical)
	if err != nil || u.String() != canonical {
		return nil, invalid("%q does not round-trip as a URI", canonical)
	}
	return u, nil
}

// validNID: NID = (alphanum) 0*30(ldh) (alphanum) (RFC 8141 §2).
func validNID(nid string) bool {
	if len(nid) < 2 || len(nid) > 32 || nid[0] == '-' || nid[len(nid)-1] == '-' {
		return false
	}
	for i := 0; i < len(nid); i++ {
		if !alnum(nid[i]) && nid[i] != '-' {
			return false
		}
	}
	return true
}

// canonicalNSS checks NSS = pchar *(pchar / "/") (RFC 8141 §2, pchar of
// RFC 3986 §3.3) and upper-cases the hex of percent-encodings.
func canonicalNSS(nss string) (string, error) {
	if nss == "" {
		return "", errors.New("empty namespace specific string")
	}
	if nss[0] == '/' {
		return "", errors.New("the namespace specific string starts with '/'")
	}
	b := []byte(nss)
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case alnum(c) || strings.IndexByte("-._~!$&'()*+,;=:@/", c) >= 0:
		case c == '%':
			if i+2 >= len(b) || !hex(b[i+1]) || !hex(b[i+2]) {
				return "", errors.New("'%' not followed by two hex digits")
			}
			b[i+1], b[i+2] = upper(b[i+1]), upper(b[i+2])
			i += 2
		default:
			return "", fmt.Errorf("character %q is not allowed unencoded (RFC 8141 §2)", c)
		}
	}
	if strings.Contains(nss, "*") {
		// RFC 8141 allows it, TS-0003 §10.1 forbids wildcards in names.
		return "", errors.New("'*' is not allowed in a certificate name (TS-0003 §10.1)")
	}
	return string(b), nil
}

// isOID: dotted decimal, at least two arcs, the first 0, 1 or 2, no
// leading zeros (ITU-T X.660; TS-0001 Annex H's OID-based Node-ID).
func isOID(s string) bool {
	arcs := strings.Split(s, ".")
	if len(arcs) < 2 || len(arcs[0]) != 1 || arcs[0][0] < '0' || arcs[0][0] > '2' {
		return false
	}
	for _, a := range arcs {
		if a == "" || len(a) > 1 && a[0] == '0' || len(a) > 20 {
			return false
		}
		for i := 0; i < len(a); i++ {
			if a[i] < '0' || a[i] > '9' {
				return false
			}
		}
	}
	return true
}

func validIMEI(s string) bool {
	v, svn, hasSVN := strings.Cut(s, ";")
	if hasSVN && (len(svn) != 6 || !strings.HasPrefix(svn, "svn=") || !digits(svn[4:])) {
		return false
	}
	p := strings.Split(v, "-")
	return len(p) == 3 && len(p[0]) == 8 && len(p[1]) == 6 && len(p[2]) == 1 && digits(p[0]) && digits(p[1]) && digits(p[2])
}

func validUUID(s string) bool {
	p := strings.Split(s, "-")
	if len(p) != 5 || len(p[0]) != 8 || len(p[1]) != 4 || len(p[2]) != 4 || len(p[3]) != 4 || len(p[4]) != 12 {
		return false
	}
	for _, x := range p {
		for i := 0; i < len(x); i++ {
			if !hex(x[i]) {
				return false
			}
		}
	}
	return true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
func hex(c byte) bool   { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
func upper(c byte) byte {
	if c >= 'a' && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}
