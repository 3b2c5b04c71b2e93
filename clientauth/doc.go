// Package clientauth verifies TLS client certificates per route. The
// listener only requests a certificate (RSPF devices may have none), so each
// route that requires one (the MAF API, OBF forwarding) checks here that the
// peer's chain ends at credfactory's root and allows client authentication,
// and learns the names the peer goes by.
package clientauth
