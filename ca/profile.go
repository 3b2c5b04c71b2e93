package ca

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Profile names a certificate profile: the complete recipe for what an
// issued certificate contains. Request fields that a profile does not use
// are refused rather than ignored, because a caller that sets them has
// misunderstood the profile and silently dropping names hides that bug.
type Profile string

const (
	// ProfileDevice is the oneM2M AE-ID certificate of TS-0003 §10.1.1.5
	// (and, before ProfileCSE, every device's): a client certificate for
	// mutual TLS whose URI SAN is the AE-ID's full URI.
	ProfileDevice Profile = "device"
	// ProfileCSE is the CSE-ID certificate of TS-0003 §10.1.1.7: the
	// public domain name of the CSE-ID (TS-0001 §6.5.1.1) as a DNS SAN, so
	// that the CSE can serve TLS with it (serverAuth) as well as register
	// and call out (clientAuth), plus the CSE-ID's full URI as for an AE.
	ProfileCSE Profile = "cse"
	// ProfileServer is a TLS server certificate (MEF, MAF and the other SP
	// endpoints hold FQDN certificates, TS-0003 §10.1).
	ProfileServer Profile = "server"
	// ProfileOBFClient is the mTLS client certificate a trusted on-boarding
	// function uses to forward credentials to the SP.
	ProfileOBFClient Profile = "obf-client"
	// ProfileOBFSubCA is the name-constrained subordinate CA a trusted OBS
	// once used to issue device certificates on the factory line, a mode
	// now retired (README "Trust model"; TS-0003 §10.1: CA certificates
	// carry name constraints).
	ProfileOBFSubCA Profile = "obf-subca"
)

// Default lifetimes when Request.Validity is zero. A request may shorten
// them but never lengthen them: the profile, not the caller, owns the upper
// bound.
const (
	day                   = 24 * time.Hour
	DefaultDeviceValidity = 365 * day
	DefaultServerValidity = 90 * day
	DefaultOBFValidity    = 365 * day
)

// Request is what the enrolment logic has decided to certify. Only the CSR's
// public key is taken from CSR; everything else a certificate says comes from
// Profile and the remaining fields.
type Request struct {
	// CSR is a DER PKCS#10 request (at most MaxCSRSize bytes); Parsed,
	// when set, is the same request already through ParseCSR, and CSR is
	// then ignored.
	CSR     []byte
	Parsed  *CSR
	Profile Profile
	// AssignedID is the identity the SP assigned: the AE-ID, CSE-ID or
	// Node-ID for ProfileDevice (it becomes the subject CN), the OBF's ID
	// for the OBF profiles. Ignored by ProfileServer.
	AssignedID string
	// URIs are URI SANs. ProfileDevice and ProfileCSE take exactly one,
	// the full URI of AssignedID (e.g. https://sp.example/Sdevice1);
	// ProfileOBFClient takes any.
	URIs []*url.URL
	// DNSNames and IPAddresses are SANs for ProfileServer (DNSNames also for
	// ProfileOBFClient, and exactly one, the CSE-ID's public domain name,
	// for ProfileCSE).
	DNSNames    []string
	IPAddresses []net.IP
	// Validity shortens the profile's default lifetime; zero means the
	// default. The result is further clamped to the issuer's NotAfter.
	Validity time.Duration
	// PermittedDNSDomains and PermittedURIDomains become the critical name
	// constraints of a ProfileOBFSubCA certificate (Go/RFC 5280 semantics:
	// "example.com" covers the host and its subdomains, ".example.com" only
	// subdomains). At least one is required for that profile.
	PermittedDNSDomains []string
	PermittedURIDomains []string
}

// leafShape is what a profile contributes to the certificate template.
type leafShape struct {
	subject     pkix.Name
	uris        []*url.URL
	dnsNames    []string
	ips         []net.IP
	keyUsage    x509.KeyUsage
	extKeyUsage []x509.ExtKeyUsage
	isCA        bool
	permDNS     []string
	permURI     []string
	validity    time.Duration
}

// shape applies the profile to the request. alg is the subject key's
// algorithm, which decides keyEncipherment.
func (p Profile) shape(req *Request, alg x509.PublicKeyAlgorithm) (*leafShape, error) {
	if n := len(req.URIs) + len(req.DNSNames) + len(req.IPAddresses); n > maxSANs {
		return nil, newErr(ErrPolicy, nil, "%d subject alternative names exceed the limit of %d", n, maxSANs)
	}
	if n := len(req.PermittedDNSDomains) + len(req.PermittedURIDomains); n > maxSANs {
		return nil, newErr(ErrPolicy, nil, "%d name constraints exceed the limit of %d", n, maxSANs)
	}
	if p != ProfileOBFSubCA && len(req.PermittedDNSDomains)+len(req.PermittedURIDomains) > 0 {
		return nil, newErr(ErrPolicy, nil, "profile %s takes no name constraints", p)
	}

	// Client keys only ever sign (CertificateVerify), whatever their
	// algorithm; RFC 5280 §4.2.1.12 ties keyEncipherment to serverAuth, and
	// zlint's e_key_usage_and_extended_key_usage_inconsistent refuses it
	// next to clientAuth.
	const clientKU = x509.KeyUsageDigitalSignature
	// A TLS 1.2 server with an RSA key may be asked for RSA key transport,
	// which needs keyEncipherment; EC and Ed25519 server keys only sign.
	serverKU := x509.KeyUsageDigitalSignature
	if alg == x509.RSA {
		serverKU |= x509.KeyUsageKeyEncipherment
	}

	s := &leafShape{}
	var def time.Duration
	switch p {
	case ProfileDevice, ProfileCSE:
		// TS-0003 §10.1.1.5/§10.1.1.7: the certificate names its entity
		// in subjectAltName, without wildcards; keyUsage at least
		// digitalSignature. The CN repeats the ID for humans and for TLS
		// stacks that still log only the subject.
		if len(req.IPAddresses) > 0 || p == ProfileDevice && len(req.DNSNames) > 0 {
			return nil, newErr(ErrPolicy, nil, "profile %s takes no DNS or IP SANs", p)
		}
		id, err := checkAssignedID(req.AssignedID)
		if err != nil {
			return nil, err
		}
		if len(req.URIs) != 1 {
			return nil, newErr(ErrPolicy, nil, "profile %s needs exactly one URI SAN, got %d", p, len(req.URIs))
		}
		u, err := checkURI(req.URIs[0])
		if err != nil {
			return nil, err
		}
		if u.Host == "" {
			// §10.1.1.5: the issuer's name constraints bind the
			// hostname part of the full URI.
			return nil, newErr(ErrPolicy, nil, "URI SAN %q has no host", u.String())
		}
		if !uriNamesID(u, id) {
			return nil, newErr(ErrPolicy, nil, "URI SAN %q does not identify assigned ID %q", u.String(), id)
		}
		s.subject = pkix.Name{CommonName: id}
		s.uris = []*url.URL{u}
		s.keyUsage = clientKU
		s.extKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		if p == ProfileCSE {
			if !strings.HasPrefix(id, "/") {
				return nil, newErr(ErrPolicy, nil, "profile %s needs a CSE-ID (\"/...\"), got %q", p, id)
			}
			if len(req.DNSNames) != 1 {
				return nil, newErr(ErrPolicy, nil, "profile %s needs exactly one DNS SAN (the CSE-ID's public domain name), got %d", p, len(req.DNSNames))
			}
			dns, err := checkDNSNames(req.DNSNames)
			if err != nil {
				return nil, err
			}
			s.dnsNames = dns
			// Serving TLS: an RSA server key may be asked for RSA
			// key transport (see serverKU).
			s.keyUsage = serverKU
			s.extKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		}
		def = DefaultDeviceValidity

	case ProfileServer:
		if len(req.URIs) > 0 {
			return nil, newErr(ErrPolicy, nil, "profile %s takes no URI SANs", p)
		}
		dns, err := checkDNSNames(req.DNSNames)
		if err != nil {
			return nil, err
		}
		ips, err := checkIPs(req.IPAddresses)
		if err != nil {
			return nil, err
		}
		if len(dns)+len(ips) == 0 {
			return nil, newErr(ErrPolicy, nil, "profile %s needs at least one DNS name or IP address", p)
		}
		s.dnsNames, s.ips = dns, ips
		s.subject = pkix.Name{CommonName: firstCN(dns, ips)}
		s.keyUsage = serverKU
		// serverAuth only: a server key that can also authenticate as a
		// client could impersonate an OBF towards another replica.
		s.extKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		def = DefaultServerValidity

	case ProfileOBFClient:
		if len(req.IPAddresses) > 0 {
			return nil, newErr(ErrPolicy, nil, "profile %s takes no IP SANs", p)
		}
		dns, err := checkDNSNames(req.DNSNames)
		if err != nil {
			return nil, err
		}
		uris, err := checkURIs(req.URIs)
		if err != nil {
			return nil, err
		}
		if len(dns)+len(uris) == 0 {
			return nil, newErr(ErrPolicy, nil, "profile %s needs at least one URI or DNS SAN", p)
		}
		cn := ""
		if req.AssignedID != "" {
			if cn, err = checkAssignedID(req.AssignedID); err != nil {
				return nil, err
			}
		} else {
			cn = firstCN(dns, nil)
		}
		s.subject = pkix.Name{CommonName: cn}
		s.dnsNames, s.uris = dns, uris
		s.keyUsage = clientKU
		s.extKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		def = DefaultOBFValidity

	case ProfileOBFSubCA:
		if len(req.URIs)+len(req.DNSNames)+len(req.IPAddresses) > 0 {
			return nil, newErr(ErrPolicy, nil, "profile %s takes no SANs", p)
		}
		id, err := checkAssignedID(req.AssignedID)
		if err != nil {
			return nil, err
		}
		permDNS, err := checkConstraints("DNS", req.PermittedDNSDomains)
		if err != nil {
			return nil, err
		}
		permURI, err := checkConstraints("URI", req.PermittedURIDomains)
		if err != nil {
			return nil, err
		}
		if len(permDNS)+len(permURI) == 0 {
			// An unconstrained sub-CA in an OBS's hands could mint a
			// certificate for any device or for the SP's own servers.
			return nil, newErr(ErrPolicy, nil, "profile %s needs at least one permitted DNS or URI domain", p)
		}
		s.subject = pkix.Name{CommonName: id}
		s.isCA = true
		s.keyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
		// Client auth only: an OBS provisions device credentials, and an
		// OBS key must not mint server (or code-signing) certificates that
		// chain to the SP root.
		s.extKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		s.permDNS, s.permURI = permDNS, permURI
		def = DefaultOBFValidity

	case ProfileNodeID:
		ns, err := nodeIDShape(req)
		if err != nil {
			return nil, err
		}
		*s, def = *ns, ns.validity

	case "":
		return nil, newErr(ErrPolicy, nil, "no profile given")
	default:
		return nil, newErr(ErrPolicy, nil, "unknown profile %q", string(p))
	}

	switch {
	case req.Validity < 0:
		return nil, newErr(ErrPolicy, nil, "validity %v is negative", req.Validity)
	case req.Validity == 0:
		s.validity = def
	case req.Validity > def:
		return nil, newErr(ErrPolicy, nil, "validity %v exceeds the %v maximum of profile %s", req.Validity, def, p)
	default:
		s.validity = req.Validity
	}
	return s, nil
}

// checkAssignedID accepts the identifiers the SP assigns (AE-IDs like
// "Sdevice1", CSE-IDs like "/cse-1", Node-IDs) and refuses anything that
// could not be a subject CN or that smuggles a wildcard.
func checkAssignedID(id string) (string, error) {
	switch {
	case id == "":
		return "", newErr(ErrPolicy, nil, "assigned ID is empty")
	case !utf8.ValidString(id):
		return "", newErr(ErrPolicy, nil, "assigned ID is not valid UTF-8")
	case utf8.RuneCountInString(id) > maxCommonNameLen:
		return "", newErr(ErrPolicy, nil, "assigned ID of %d characters exceeds the %d-character common name limit",
			utf8.RuneCountInString(id), maxCommonNameLen)
	case strings.Contains(id, "*"):
		return "", newErr(ErrPolicy, nil, "assigned ID %q contains a wildcard", id)
	case strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return "", newErr(ErrPolicy, nil, "assigned ID %q contains whitespace or control characters", id)
	}
	return id, nil
}

// checkURI accepts absolute URIs (RFC 5280 §4.2.1.6: a scheme and a
// scheme-specific part), refusing wildcards (TS-0003 §10.1), embedded
// credentials and empty values. oneM2M's scheme-less absolute-ID form
// "//SP-ID/..." is not one: AssignedIDURI puts a scheme in front.
func checkURI(u *url.URL) (*url.URL, error) {
	if u == nil {
		return nil, newErr(ErrPolicy, nil, "URI SAN is nil")
	}
	str := u.String()
	switch {
	case str == "":
		return nil, newErr(ErrPolicy, nil, "URI SAN is empty")
	case len(str) > 1024:
		return nil, newErr(ErrPolicy, nil, "URI SAN of %d bytes is too long", len(str))
	case strings.Contains(str, "*") || strings.Contains(u.Host, "*"):
		return nil, newErr(ErrPolicy, nil, "URI SAN %q contains a wildcard", str)
	case u.User != nil:
		return nil, newErr(ErrPolicy, nil, "URI SAN must not carry user information")
	case u.Scheme == "":
		return nil, newErr(ErrPolicy, nil, "URI SAN %q is not an absolute URI: it has no scheme (RFC 5280 §4.2.1.6)", str)
	case u.Fragment != "" || u.RawQuery != "":
		return nil, newErr(ErrPolicy, nil, "URI SAN %q must not carry a query or fragment", str)
	}
	if u.Host != "" && net.ParseIP(u.Hostname()) == nil {
		if _, err := normalizeDNSName(u.Hostname()); err != nil {
			return nil, newErr(ErrPolicy, err, "URI SAN %q has an invalid host", str)
		}
	}
	return u, nil
}

func checkURIs(in []*url.URL) ([]*url.URL, error) {
	out := make([]*url.URL, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, u := range in {
		u, err := checkURI(u)
		if err != nil {
			return nil, err
		}
		if !seen[u.String()] {
			seen[u.String()] = true
			out = append(out, u)
		}
	}
	return out, nil
}

// uriNamesID reports whether the URI's last component is the assigned ID, so
// "https://sp.example/Sdevice1" names "Sdevice1" and
// "https://sp.example/cse-1" names the CSE-ID "/cse-1", while
// "https://sp.example/XSdevice1" names neither.
func uriNamesID(u *url.URL, id string) bool {
	s := u.String()
	bare := strings.TrimPrefix(id, "/")
	return s == id || strings.HasSuffix(s, "/"+bare) || strings.HasSuffix(s, ":"+bare)
}

// normalizeDNSName lower-cases a host name and checks it is a plain LDH name:
// no wildcards (each device and server proves its own key), no trailing dot,
// no empty labels.
func normalizeDNSName(name string) (string, error) {
	n := strings.ToLower(name)
	if n == "" {
		return "", newErr(ErrPolicy, nil, "empty DNS name")
	}
	if len(n) > 253 {
		return "", newErr(ErrPolicy, nil, "DNS name of %d bytes exceeds 253", len(n))
	}
	if strings.Contains(n, "*") {
		return "", newErr(ErrPolicy, nil, "DNS name %q is a wildcard", name)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", newErr(ErrPolicy, nil, "DNS name %q has an invalid label", name)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", newErr(ErrPolicy, nil, "DNS name %q contains %q", name, string(c))
			}
		}
	}
	return n, nil
}

func checkDNSNames(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, name := range in {
		n, err := normalizeDNSName(name)
		if err != nil {
			return nil, err
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

func checkIPs(in []net.IP) ([]net.IP, error) {
	out := make([]net.IP, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, ip := range in {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return nil, newErr(ErrPolicy, nil, "IP address of %d bytes", len(ip))
		}
		if ip.IsUnspecified() {
			return nil, newErr(ErrPolicy, nil, "IP address %s is unspecified", ip)
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if !seen[string(ip)] {
			seen[string(ip)] = true
			out = append(out, ip)
		}
	}
	return out, nil
}

// checkConstraints validates permitted subtrees: a DNS name, optionally with
// a leading dot meaning "subdomains only".
func checkConstraints(kind string, in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, c := range in {
		dot := strings.HasPrefix(c, ".")
		n, err := normalizeDNSName(strings.TrimPrefix(c, "."))
		if err != nil {
			return nil, fmt.Errorf("ca: permitted %s domain: %w", kind, err)
		}
		if dot {
			n = "." + n
		}
		out = append(out, n)
	}
	return out, nil
}

// firstCN picks the subject CN for a TLS certificate: the first DNS name (or
// IP) that fits ub-common-name. Names that do not fit leave the subject empty,
// which RFC 5280 allows when the SAN extension is present (Go then marks it
// critical).
func firstCN(dns []string, ips []net.IP) string {
	for _, n := range dns {
		if len(n) <= maxCommonNameLen {
			return n
		}
	}
	if len(ips) > 0 {
		return ips[0].String()
	}
	return ""
}
