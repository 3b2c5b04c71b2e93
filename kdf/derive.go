package kdf

import (
	"crypto/hmac"
	"crypto/sha256"
	"strconv"

	"golang.org/x/text/unicode/norm"
)

// TS-0003 §10.3 derivation labels, copied byte for byte. A device or Target
// that implements TS-0003 uses the same strings, so any change here breaks
// interoperability and every key already handed out.
const (
	// LabelMasterCredential derives Km, the master credential shared with
	// the MAF (TS-0003 §10.3).
	LabelMasterCredential = "oneM2M Enrolment Key to Master Credential derivation"
	// LabelProvisionedSecureConnection derives Kpsa, the provisioned secure
	// connection key (TS-0003 §10.3).
	LabelProvisionedSecureConnection = "oneM2M Enrolment Key to Provisioned Secure Connection Key derivation"
	// LabelUsageConstrained derives Kuc, a usage-constrained symmetric key
	// (TS-0003 §10.3).
	LabelUsageConstrained = "oneM2M Enrolment Key to Usage-Constrained Symmetric Key derivation"
)

// Km returns HMAC-SHA-256(Ke, LabelMasterCredential || MAF-ID)
// (TS-0003 §10.3).
//
// TS-0003 puts no separator between label and identifier (unlike our HSM
// root, which uses 0x00): it is kept that way because the point of these
// derivations is that the other party computes the same bytes. The label is
// fixed, so the concatenation is still unambiguous.
func Km(ke []byte, mafID string) []byte {
	return hmacSHA256(ke, KmMessage(mafID))
}

// KmMessage is what Km authenticates: LabelMasterCredential || NFKC(MAF-ID).
// The HSM signs exactly these bytes when it derives Km from an imported Ke.
func KmMessage(mafID string) []byte {
	return message(LabelMasterCredential, nfkc(mafID))
}

// Kpsa returns HMAC-SHA-256(Ke, LabelProvisionedSecureConnection ||
// Enrolee-ID) (TS-0003 §10.3). No separator, as for Km.
func Kpsa(ke []byte, enroleeID string) []byte {
	return hmacSHA256(ke, KpsaMessage(enroleeID))
}

// KpsaMessage is what Kpsa authenticates: LabelProvisionedSecureConnection
// || NFKC(Enrolee-ID).
func KpsaMessage(enroleeID string) []byte {
	return message(LabelProvisionedSecureConnection, nfkc(enroleeID))
}

// Kuc returns HMAC-SHA-256(Ke, LabelUsageConstrained || SUID ||
// Target-FQDN) (TS-0003 §10.3). No separators, as for Km.
//
// SUID is encoded as its decimal ASCII digits ("22", not the byte 0x16):
// TS-0003's "||" concatenates identifiers as strings (the labels are text,
// the IDs UTF-8), and a SUID's only textual form anywhere in oneM2M is
// decimal: the m2m:suid enumeration value (TS-0004) as serialised on the
// wire, and the <SUID> path segment of RETRIEVE /fetchCredentials/<KeID>/<SUID>.
// A Target that reads the SUID from that request and hashes it reproduces
// these bytes. Every valid SUID has exactly two digits, so SUID ||
// Target-FQDN cannot be split two ways. Kuc does not reject an invalid SUID
// (it has no error result); Context.Validate and ParseSUID do.
func Kuc(ke []byte, suid int, targetFQDN string) []byte {
	return hmacSHA256(ke, KucMessage(suid, targetFQDN))
}

// KucMessage is what Kuc authenticates: LabelUsageConstrained ||
// decimal(SUID) || NFKC(Target-FQDN).
func KucMessage(suid int, targetFQDN string) []byte {
	return message(LabelUsageConstrained, strconv.Itoa(suid), nfkc(targetFQDN))
}

// nfkc normalises an identifier before it is hashed: TS-0003 §10.3 hashes
// IDs as UTF-8 after NFKC, so that visually identical IDs (a full-width
// letter, a ligature) typed on different systems give the same key.
func nfkc(id string) string {
	return norm.NFKC.String(id)
}

func message(parts ...string) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(make([]byte, 0, sha256.Size))
}
