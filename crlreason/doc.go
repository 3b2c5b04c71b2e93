// Package crlreason holds the RFC 5280 §5.3.1 CRLReason codes and their
// names: the registry records a code with every revocation, the APIs take
// and show the names, and the CRL and OCSP responses carry the code. One
// list, so the three can never disagree. It imports nothing.
package crlreason
