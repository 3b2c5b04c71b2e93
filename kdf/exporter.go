package kdf

import (
	"errors"
	"fmt"
)

// TS-0003 §10.3 takes the enrolment key from the RSPF's TLS session with the
// MEF: an RFC 5705 exporter with this label, ExporterSize bytes long.
const (
	// ExporterLabel is the RFC 5705 label of the enrolment key (TS-0003
	// §10.3).
	ExporterLabel = "EXPORTER-oneM2M-Bootstrap"
	// ExporterSize is how many bytes are exported: RelativeKeID and Ke.
	ExporterSize = RelativeIDSize + KeySize
)

// ErrExport reports a TLS session that cannot give the enrolment key: no TLS
// at all, or a session whose exporter is unsafe and refused (TLS 1.2 without
// the Extended Master Secret, RFC 7627: Go's crypto/tls refuses to export
// from such a session, because its master secret is not bound to the
// handshake and a man in the middle could synchronise two sessions on it).
var ErrExport = errors.New("kdf: the TLS session cannot export keying material (RFC 5705): use TLS 1.3, or TLS 1.2 with the Extended Master Secret (RFC 7627)")

// Exporter is a TLS session's RFC 5705 keying material exporter, as
// tls.ConnectionState.ExportKeyingMaterial.
type Exporter func(label string, context []byte, length int) ([]byte, error)

// ExportEnrolmentKey returns the RelativeKeID and Ke of a TLS session
// (TS-0003 §10.3): the 48-byte export with ExporterLabel and no context,
// split by SplitExport. Both ends of the session compute the same bytes, so
// the key is never sent.
//
// "No context" is RFC 5705 §4's absent context (exp is called with nil),
// not a zero-length one: the two differ in TLS 1.2, where an absent context
// is not hashed at all; in TLS 1.3 they are the same (RFC 8446 §7.5).
// TS-0003 §10.3 names no context value, so none is given. Errors wrap
// ErrExport.
func ExportEnrolmentKey(exp Exporter) (relative, ke []byte, err error) {
	if exp == nil {
		return nil, nil, fmt.Errorf("%w: the request did not arrive over TLS", ErrExport)
	}
	ekm, err := exp(ExporterLabel, nil, ExporterSize)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrExport, err)
	}
	return SplitExport(ekm)
}

// SplitExport splits the 48-byte export into RelativeKeID (the first 16
// bytes) and Ke (the last 32).
//
// TS-0003 §10.3 words the split as "most significant" and "least
// significant" bytes of the exported value; read as a big-endian number,
// as every TLS value is (RFC 8446 §3.3, "network byte order"), the most
// significant bytes are the first ones out of the exporter. This reading is
// documented in docs/onem2m.md "Key hierarchy"; a device that splits the
// other way gets another KeID and key, which the end-to-end test would
// show. The slices alias ekm.
func SplitExport(ekm []byte) (relative, ke []byte, err error) {
	if len(ekm) != ExporterSize {
		return nil, nil, fmt.Errorf("%w: exported %d bytes, want %d", ErrExport, len(ekm), ExporterSize)
	}
	return ekm[:RelativeIDSize:RelativeIDSize], ekm[RelativeIDSize:], nil
}
