package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"strings"
	"time"
)

// Where the issuing CA's status services live, relative to the public base
// URL of config ca.status_url (api/openapi.yaml: CRL at
// /ca/v1/crl/{issuer}.crl, OCSP at /ocsp). IssuingCRLName is the stable
// {issuer} name of the issuing CA's CRL, written into every certificate it
// issues: changing it would orphan the distribution point of every
// certificate already out there.
const (
	CRLPathPrefix  = "/ca/v1/crl/"
	CRLPathSuffix  = ".crl"
	OCSPPath       = "/ocsp"
	IssuingCRLName = "issuing"
	// OBFCRLName is the OBF CA's: it lists the client certificates of
	// disabled OBFs and every sub-CA it certified before that mode was
	// retired.
	OBFCRLName = "obf"
	// RootCRLName is the root's, signed at the ceremony: it lists revoked
	// intermediates, for relying parties that check every level.
	RootCRLName = "root"
)

// CRLURL is the URL of the named CRL under base (no trailing slash needed).
func CRLURL(base, name string) string {
	return strings.TrimRight(base, "/") + CRLPathPrefix + name + CRLPathSuffix
}

// OCSPURL is the OCSP responder's URL under base.
func OCSPURL(base string) string { return strings.TrimRight(base, "/") + OCSPPath }

// CRL is a signed certificate revocation list and what serving it needs.
type CRL struct {
	DER []byte
	// Number is the cRLNumber extension (RFC 5280 §5.2.3).
	Number     *big.Int
	ThisUpdate time.Time
	NextUpdate time.Time
	Entries    int
}

// CRLNumber derives a CRL number from thisUpdate, as Boulder does: the
// number grows with time. Replicas with skewed clocks (or a clock stepped
// back) could still go backwards, so castatus reserves each number in the
// registry (store.NextCRLNumber) starting from this one. Nanoseconds keep
// two CRLs signed within one second apart, and fit the 20 octets the RFC
// allows for centuries.
func CRLNumber(thisUpdate time.Time) *big.Int { return big.NewInt(thisUpdate.UnixNano()) }

// SignCRL signs a complete CRL over entries with the issuer key (in the
// HSM in production). thisUpdate and nextUpdate are encoded to the second;
// the CRL number is number (CRLNumber(thisUpdate) when nil: callers with
// several replicas reserve one in the registry so numbers never go back),
// and the authority key identifier is the issuer's subject key ID. An entry's ReasonCode of 0 (unspecified)
// leaves out its reason extension.
func (c *CA) SignCRL(ctx context.Context, number *big.Int, thisUpdate, nextUpdate time.Time, entries []x509.RevocationListEntry) (*CRL, error) {
	if !nextUpdate.After(thisUpdate) {
		return nil, fmt.Errorf("ca: sign CRL: nextUpdate %v is not after thisUpdate %v", nextUpdate, thisUpdate)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	if number == nil {
		number = CRLNumber(thisUpdate)
	}
	var der []byte
	err := c.audited(ctx, "CRL", func() []slog.Attr {
		return []slog.Attr{slog.String("crl_number", number.String()), slog.Int("entries", len(entries))}
	}, func() (_ []slog.Attr, err error) {
		der, err = x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number:                    number,
			ThisUpdate:                thisUpdate.UTC(),
			NextUpdate:                nextUpdate.UTC(),
			RevokedCertificateEntries: entries,
		}, c.issuer, c.signer)
		return []slog.Attr{slog.String("sha256", sha256Hex(der))}, err
	})
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	return &CRL{DER: der, Number: number, ThisUpdate: thisUpdate.UTC().Truncate(time.Second),
		NextUpdate: nextUpdate.UTC().Truncate(time.Second), Entries: len(entries)}, nil
}

// ParseSerialHex reads a serial as the registry stores it (big.Int.Text(16)).
func ParseSerialHex(s string) (*big.Int, error) {
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("ca: serial %q is not a positive hex number", s)
	}
	return n, nil
}
