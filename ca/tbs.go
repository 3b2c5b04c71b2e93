package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	encasn1 "encoding/asn1"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// encodeLeafTBS writes the TBSCertificate of an end-entity template
// directly, byte for byte as x509.CreateCertificate would (RFC 5280 §4.1;
// Go's extension order: keyUsage, extKeyUsage, basicConstraints, SKI, AKI,
// AIA, subjectAltName, CRL distribution points). CreateCertificate costs a
// reflection-driven ASN.1 marshal plus a throwaway signature and its check,
// ~15 % of an enrolment's CPU; this costs a few microseconds. ok is false
// for any template it does not cover (CA certificates, name constraints,
// e-mail names, policies, extended key usages outside the table, an empty
// subject), which then go through CreateCertificate. TestEncodeLeafTBS
// checks the output against CreateCertificate's.
func encodeLeafTBS(tmpl *x509.Certificate, issuerSubject, issuerSKI, algID []byte, pub crypto.PublicKey) (tbs []byte, ok bool) {
	if tmpl.IsCA || !tmpl.BasicConstraintsValid || tmpl.MaxPathLen != 0 || tmpl.MaxPathLenZero ||
		len(tmpl.EmailAddresses) > 0 || len(tmpl.UnknownExtKeyUsage) > 0 || len(tmpl.ExtraExtensions) > 0 ||
		len(tmpl.PermittedDNSDomains)+len(tmpl.ExcludedDNSDomains)+len(tmpl.PermittedURIDomains)+len(tmpl.ExcludedURIDomains)+
			len(tmpl.PermittedIPRanges)+len(tmpl.ExcludedIPRanges)+len(tmpl.PermittedEmailAddresses)+len(tmpl.ExcludedEmailAddresses) > 0 ||
		len(tmpl.PolicyIdentifiers)+len(tmpl.Policies)+len(tmpl.IssuingCertificateURL) > 0 ||
		len(tmpl.RawSubject) > 0 || len(tmpl.SubjectKeyId) == 0 || len(issuerSKI) == 0 || tmpl.SerialNumber == nil ||
		tmpl.SerialNumber.Sign() <= 0 {
		return nil, false
	}
	subject, err := encasn1.Marshal(tmpl.Subject.ToRDNSequence())
	// An empty subject makes the SAN critical, and a self-issued one drops
	// the AKI: neither is an end entity of ours.
	if err != nil || len(subject) == 2 || bytes.Equal(subject, issuerSubject) {
		return nil, false
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, false
	}
	ekus := make([]encasn1.ObjectIdentifier, 0, len(tmpl.ExtKeyUsage))
	for _, u := range tmpl.ExtKeyUsage {
		oid, known := ekuOIDs[u]
		if !known {
			return nil, false
		}
		ekus = append(ekus, oid)
	}
	for _, u := range tmpl.URIs {
		if !isIA5(u.String()) {
			return nil, false
		}
	}
	for _, d := range tmpl.DNSNames {
		if !isIA5(d) {
			return nil, false
		}
	}

	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1Int64(2) // v3
		})
		b.AddASN1BigInt(tmpl.SerialNumber)
		b.AddBytes(algID)
		b.AddBytes(issuerSubject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, tmpl.NotBefore)
			addTime(b, tmpl.NotAfter)
		})
		b.AddBytes(subject)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				if tmpl.KeyUsage != 0 {
					addExtension(b, oidCertExtKeyUsage, true, func(b *cryptobyte.Builder) { addKeyUsage(b, tmpl.KeyUsage) })
				}
				if len(ekus) > 0 {
					addExtension(b, oidCertExtExtKeyUsage, false, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							for _, oid := range ekus {
								b.AddASN1ObjectIdentifier(oid)
							}
						})
					})
				}
				addExtension(b, oidCertExtBasicConstraints, true, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // cA FALSE, no pathLen: both DEFAULT
				})
				addExtension(b, oidCertExtSubjectKeyID, false, func(b *cryptobyte.Builder) { b.AddASN1OctetString(tmpl.SubjectKeyId) })
				addExtension(b, oidCertExtAuthorityKeyID, false, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(issuerSKI) })
					})
				})
				if len(tmpl.OCSPServer) > 0 {
					addExtension(b, oidCertExtAuthorityInfoAccess, false, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							for _, u := range tmpl.OCSPServer {
								b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
									b.AddASN1ObjectIdentifier(oidCertAccessOCSP)
									b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
								})
							}
						})
					})
				}
				if len(tmpl.DNSNames)+len(tmpl.IPAddresses)+len(tmpl.URIs) > 0 {
					addExtension(b, oidCertExtSubjectAltName, false, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							for _, d := range tmpl.DNSNames {
								b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(d)) })
							}
							for _, ip := range tmpl.IPAddresses {
								if v4 := ip.To4(); v4 != nil {
									ip = v4
								}
								b.AddASN1(cbasn1.Tag(7).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ip) })
							}
							for _, u := range tmpl.URIs {
								b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u.String())) })
							}
						})
					})
				}
				if len(tmpl.CRLDistributionPoints) > 0 {
					addExtension(b, oidCertExtCRLDistributionPoints, false, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							for _, u := range tmpl.CRLDistributionPoints {
								b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // DistributionPoint
									b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // distributionPoint
										b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { // fullName
											b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
										})
									})
								})
							}
						})
					})
				}
			})
		})
	})
	out, err := b.Bytes()
	if err != nil {
		return nil, false
	}
	return out, true
}

var (
	oidCertExtKeyUsage              = encasn1.ObjectIdentifier{2, 5, 29, 15}
	oidCertExtExtKeyUsage           = encasn1.ObjectIdentifier{2, 5, 29, 37}
	oidCertExtBasicConstraints      = encasn1.ObjectIdentifier{2, 5, 29, 19}
	oidCertExtSubjectKeyID          = encasn1.ObjectIdentifier{2, 5, 29, 14}
	oidCertExtAuthorityKeyID        = encasn1.ObjectIdentifier{2, 5, 29, 35}
	oidCertExtAuthorityInfoAccess   = encasn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	oidCertExtSubjectAltName        = encasn1.ObjectIdentifier{2, 5, 29, 17}
	oidCertExtCRLDistributionPoints = encasn1.ObjectIdentifier{2, 5, 29, 31}
	oidCertAccessOCSP               = encasn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1}

	ekuOIDs = map[x509.ExtKeyUsage]encasn1.ObjectIdentifier{
		x509.ExtKeyUsageServerAuth: {1, 3, 6, 1, 5, 5, 7, 3, 1},
		x509.ExtKeyUsageClientAuth: {1, 3, 6, 1, 5, 5, 7, 3, 2},
	}
)

func addExtension(b *cryptobyte.Builder, oid encasn1.ObjectIdentifier, critical bool, value func(*cryptobyte.Builder)) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

// addKeyUsage writes the keyUsage BIT STRING with its trailing zero bits
// dropped (DER, X.690 §11.2.2), as Go does.
func addKeyUsage(b *cryptobyte.Builder, ku x509.KeyUsage) {
	bits := []byte{bitReverse(byte(ku)), bitReverse(byte(ku >> 8))}
	if bits[1] == 0 {
		bits = bits[:1]
	}
	unused := 0
	for last := bits[len(bits)-1]; unused < 8 && last&(1<<unused) == 0; unused++ {
	}
	b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) {
		b.AddUint8(uint8(unused))
		b.AddBytes(bits)
	})
}

func bitReverse(v byte) byte {
	var r byte
	for i := 0; i < 8; i++ {
		r = r<<1 | v&1
		v >>= 1
	}
	return r
}

// addTime writes UTCTime for 1950-2049 and GeneralizedTime otherwise (RFC
// 5280 §4.1.2.5), to the second, in UTC.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y < 2050 {
		b.AddASN1UTCTime(t)
		return
	}
	b.AddASN1GeneralizedTime(t)
}

func isIA5(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
