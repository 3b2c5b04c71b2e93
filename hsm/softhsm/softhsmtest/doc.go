// Package softhsmtest takes a SoftHSM2 token away from a running process
// and gives it back, for fault tests of the HSM pool and the server. Only
// tests import it: nothing a deployment runs can hide its own token.
package softhsmtest
