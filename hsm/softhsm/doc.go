// Package softhsm creates the SoftHSM2 token store that is credfactory's
// embedded HSM: a config file and token directory under the data directory,
// a token initialised with random user and SO PINs kept in 0600 files. The
// init command uses it on first run and every HSM test uses it for a fresh
// token per test package. It talks PKCS#11 (C_InitToken, C_InitPIN) rather
// than running softhsm2-util, so no PIN ever appears on a command line.
package softhsm
