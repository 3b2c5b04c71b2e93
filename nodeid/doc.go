// Package nodeid reads M2M-Node-IDs (TS-0001 §7.1.5; TS-0004 m2m:nodeID)
// into the one canonical form the registry stores and a Node-ID
// certificate names (TS-0003 §10.1.1.8: subjectAltName = the Node-ID).
//
// A Node-ID is either a URN (RFC 8141; the device-identifier URNs TS-0005
// §5.2 and §6.2.1 map onto the M2M-Node-ID, such as urn:gsma:imei RFC
// 7254, urn:uuid RFC 9562 or urn:dev RFC 9039) or an OID (TS-0001 Annex H,
// e.g. 1.2.410.200074.1.1.1), which is written urn:oid:<OID> (RFC 3061)
// so that both forms are one absolute URI, the only kind RFC 5280
// §4.2.1.6 allows in a URI subjectAltName. docs/onem2m.md "Certificate
// names" says why the certificate carries it this way.
package nodeid
