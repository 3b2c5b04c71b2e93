package kdf

import (
	"fmt"
	"strconv"
)

// SUID is a security usage identifier, m2m:suid in TS-0004: what a
// credential may be used for. It selects the key in Kuc and in
// RETRIEVE /fetchCredentials/<KeID>/<SUID>.
type SUID int

// Usage codes (TS-0004 m2m:suid, as listed in docs/onem2m.md "Usage codes").
// 24/25 and 34/35 are read as encryption/signature by the parallel with
// 14/15, which docs/onem2m.md names.
const (
	// 10-15: pre-provisioned symmetric keys.
	SUIDPreMEF              SUID = 10 // with the MEF
	SUIDPreMAF              SUID = 11 // with the MAF
	SUIDPreSAEF             SUID = 12 // security association (SAEF)
	SUIDPreESPrim           SUID = 13 // end-to-end security of primitives
	SUIDPreESDataEncryption SUID = 14 // end-to-end security of data, encryption
	SUIDPreESDataSignature  SUID = 15 // end-to-end security of data, signature

	// 21-25: symmetric keys provisioned by Remote Security Provisioning.
	SUIDRSPFMAF              SUID = 21
	SUIDRSPFSAEF             SUID = 22
	SUIDRSPFESPrim           SUID = 23
	SUIDRSPFESDataEncryption SUID = 24
	SUIDRSPFESDataSignature  SUID = 25

	// 32-35: symmetric keys distributed by the MAF.
	SUIDMAFSAEF             SUID = 32
	SUIDMAFESPrim           SUID = 33
	SUIDMAFESDataEncryption SUID = 34
	SUIDMAFESDataSignature  SUID = 35

	// 40-43: certificates.
	SUIDCertMEF    SUID = 40
	SUIDCertMAF    SUID = 41
	SUIDCertSAEF   SUID = 42
	SUIDCertESPrim SUID = 43
)

var suidNames = map[SUID]string{
	SUIDPreMEF:               "pre-provisioned MEF",
	SUIDPreMAF:               "pre-provisioned MAF",
	SUIDPreSAEF:              "pre-provisioned SAEF",
	SUIDPreESPrim:            "pre-provisioned ESPrim",
	SUIDPreESDataEncryption:  "pre-provisioned ESData encryption",
	SUIDPreESDataSignature:   "pre-provisioned ESData signature",
	SUIDRSPFMAF:              "RSPF-provisioned MAF",
	SUIDRSPFSAEF:             "RSPF-provisioned SAEF",
	SUIDRSPFESPrim:           "RSPF-provisioned ESPrim",
	SUIDRSPFESDataEncryption: "RSPF-provisioned ESData encryption",
	SUIDRSPFESDataSignature:  "RSPF-provisioned ESData signature",
	SUIDMAFSAEF:              "MAF-distributed SAEF",
	SUIDMAFESPrim:            "MAF-distributed ESPrim",
	SUIDMAFESDataEncryption:  "MAF-distributed ESData encryption",
	SUIDMAFESDataSignature:   "MAF-distributed ESData signature",
	SUIDCertMEF:              "certificate MEF",
	SUIDCertMAF:              "certificate MAF",
	SUIDCertSAEF:             "certificate SAEF",
	SUIDCertESPrim:           "certificate ESPrim",
}

// Valid reports whether s is one of the usage codes above.
func (s SUID) Valid() bool {
	_, ok := suidNames[s]
	return ok
}

// String names the usage for logs, e.g. "RSPF-provisioned SAEF".
func (s SUID) String() string {
	if n, ok := suidNames[s]; ok {
		return n
	}
	return "SUID(" + strconv.Itoa(int(s)) + ")"
}

// ParseSUID parses the decimal <SUID> of /fetchCredentials/<KeID>/<SUID>.
// Only the canonical spelling is accepted ("22", not "022" or "+22"),
// because those digits are the bytes Kuc hashes. Errors wrap ErrBadID.
func ParseSUID(s string) (SUID, error) {
	n, err := parseCanonicalUint(s)
	if err != nil {
		return 0, fmt.Errorf("%w: SUID %q is not a decimal number", ErrBadID, s)
	}
	if !SUID(n).Valid() {
		return 0, fmt.Errorf("%w: unknown SUID %d", ErrBadID, n)
	}
	return SUID(n), nil
}

// FactoryResetRemoves reports whether a factory reset removes credentials of
// this usage: every SAEF, ESPrim and ESData credential of the device, SUIDs
// 12/22/32/42, 13/23/33/43, 14/15/24/25/34/35 (docs/onem2m.md "Usage codes";
// docs/architecture.md "The two paths", ownership transfer). MEF and MAF
// credentials (10, 11, 21, 40, 41) are not in that list.
func FactoryResetRemoves(s SUID) bool {
	switch s {
	case 12, 22, 32, 42, // SAEF
		13, 23, 33, 43, // ESPrim
		14, 15, 24, 25, 34, 35: // ESData
		return true
	}
	return false
}
