package forwardapi

import (
	"net/url"
	"strings"
	"time"
)

// Path is the route the batch is posted to.
const Path = "/mef/v1/forward"

// MaxBatch is the default and the usual limit of items per request (the
// SP's mef.max_forward).
const MaxBatch = 1000

// Request is one batch.
type Request struct {
	Items []Item `json:"items"`
}

// Item is one device's credential request: the enrolment token the portal
// issued to this OBF, the device's assigned ID, and exactly one of CSR and
// Key.
type Item struct {
	Token      string `json:"token"`
	AssignedID string `json:"assignedId"`
	// RequestID makes a resend recognisable: the same ID with the same
	// token is answered "replayed" with what was recorded the first time.
	// Empty means the token and the credential do.
	RequestID string `json:"requestId,omitempty"`
	// CSR is the device's PKCS#10 request (PEM, or base64 DER). The SP's
	// issuing CA certifies its key for the token's assigned ID.
	CSR string `json:"csr,omitempty"`
	// Certificate was the sub-CA mode, which is retired: an item that
	// carries one is refused with CodeSubCARetired.
	Certificate string `json:"certificate,omitempty"`
	Key         *Key   `json:"key,omitempty"`
}

// Key is a shared key the OBF generated and loads into the device. The SP
// assigns its identifiers; an item that names them is refused
// (CodeKeyIDAssignedBySP).
type Key struct {
	SUID      int      `json:"suid"`
	TargetIDs []string `json:"targetIds"`
	// Value is the key (16 to 64 bytes; base64 in JSON).
	Value []byte `json:"value"`
	// NotAfter asks for a lifetime; zero takes the SP's mef.key_lifetime,
	// and a later time than that is refused (CodeKeyLifetime).
	NotAfter time.Time `json:"notAfter,omitzero"`
	// KeyID and KeID are not the OBF's to choose: set, they are refused.
	KeyID string `json:"keyId,omitempty"`
	KeID  string `json:"keId,omitempty"`
}

// Response answers a batch: one Result per item, Index naming it.
type Response struct {
	Results []Result `json:"results"`
}

// Statuses of a Result.
const (
	StatusRecorded = "recorded"
	StatusReplayed = "replayed"
	StatusRefused  = "refused"
)

// Result is one item's outcome. Recorded and replayed items carry the
// credential as the SP holds it: the certificate and its chain (without
// the root) for a CSR, the identifiers and lifetime for a key.
type Result struct {
	Index        int    `json:"index"`
	Status       string `json:"status"`
	CredentialID string `json:"credentialId,omitempty"`
	// Certificate is the issued certificate followed by its chain up to,
	// not including, the SP root (PEM).
	Certificate string    `json:"certificate,omitempty"`
	KeyID       string    `json:"keyId,omitempty"`
	KeID        string    `json:"keId,omitempty"`
	NotAfter    time.Time `json:"notAfter,omitzero"`
	Code        string    `json:"code,omitempty"`
	Message     string    `json:"message,omitempty"`
}

// Refusal codes of a Result (and of the whole request where noted). The
// token codes are those of every enrolment path.
const (
	CodeBadItem             = "bad_item"
	CodeBadKey              = "bad_key"
	CodeBadCSR              = "bad_csr"
	CodeCSRSANMismatch      = "csr_san_mismatch"
	CodeCSRExtension        = "csr_extension_refused"
	CodeSubCARetired        = "sub_ca_retired"
	CodeKeyIDAssignedBySP   = "key_id_assigned_by_sp"
	CodeKeyLifetime         = "key_lifetime_exceeded"
	CodeTokenUnknown        = "token_unknown"
	CodeTokenRedeemed       = "token_redeemed"
	CodeTokenExpired        = "token_expired"
	CodeTokenCancelled      = "token_cancelled"
	CodeTokenMismatch       = "token_mismatch"
	CodeCredentialExists    = "credential_exists"
	CodeRegistryUnavailable = "registry_unavailable"
	CodeRegistryContention  = "registry_contention"
	CodeHSMUnavailable      = "hsm_unavailable"
	CodeInternal            = "internal"
	// Whole-request refusals.
	CodeNotTrustedOBF      = "not_a_trusted_obf"
	CodeClientCertRequired = "client_certificate_required"
	CodeBatchSize          = "batch_size"
	CodeRateLimited        = "rate_limited"
)

// Transient reports whether an item refused with code may be recorded if
// sent again unchanged: the SP could not decide now (its registry or HSM
// was unavailable, its registry kept conflicting with concurrent changes, or
// it failed), not that it said no.
func Transient(code string) bool {
	switch code {
	case CodeRegistryUnavailable, CodeRegistryContention, CodeHSMUnavailable, CodeInternal:
		return true
	}
	return false
}

// AssignedIDURI is the URI SAN of an assigned ID's certificate: TS-0003
// §10.1.1.5's "full URI representation" of the absolute AE-ID (TS-0004
// §6.2.3: "//" SP-FQDN "/" SP-relative ID) as an RFC 3986 absolute URI,
// https://<SP domain>/<ID>, for an SP-relative AE-ID ("S...") and a CSE-ID
// ("/...") alike. The absolute ID is exactly the URI's hier-part, so a
// relying party gets it back by dropping "https:"; RFC 5280 §4.2.1.6 wants
// the scheme, and URI name constraints match its host (docs/onem2m.md
// "Certificate names").
func AssignedIDURI(spDomain, assignedID string) *url.URL {
	return &url.URL{Scheme: AssignedIDURIScheme, Host: spDomain, Path: "/" + strings.TrimPrefix(assignedID, "/")}
}

// AssignedIDURIScheme is the scheme of AssignedIDURI: https, the scheme of
// the oneM2M HTTP binding (TS-0009) and the one oneM2M deployments already
// put on AE-ID certificates.
const AssignedIDURIScheme = "https"

// LegacyAssignedIDURI is the scheme-less form //<SP domain>/<ID> that
// certificates carried before AssignedIDURI. RFC 5280 parsers refuse it, and
// nothing issues it any more; a CSR may still name it (a device copying the
// SAN of the certificate it renews), meaning the same identity.
func LegacyAssignedIDURI(spDomain, assignedID string) *url.URL {
	return &url.URL{Host: spDomain, Path: "/" + strings.TrimPrefix(assignedID, "/")}
}

// Credential-ID types of certificates (TS-0003 §10.4).
const (
	CredentialCSEIDCert = 32
	CredentialAEIDCert  = 33
)

// CertCredentialType is the Credential-ID type of an assigned ID's
// certificate (TS-0003 §10.4): 32 for a CSE-ID, 33 for an AE-ID.
func CertCredentialType(assignedID string) int {
	if strings.HasPrefix(assignedID, "/") {
		return CredentialCSEIDCert
	}
	return CredentialAEIDCert
}
