// Package forwardapi is the wire contract of POST /mef/v1/forward: the
// batch a trusted OBF (a factory line's OBS) sends, the per-item answers,
// their statuses and refusal codes, and which refusals are worth a retry.
// The MEF (server side), package client and the OBS import it, so a code
// renamed on one side is renamed on all; it imports only the standard
// library, so the factory-line program carries none of the server.
//
// The trusted path is a registration authority (README "Trust model"): the
// OBF forwards the enrolment token with the device's CSR, or with the
// shared key it generated, and the SP binds the identity. The SP's issuing
// CA signs every certificate, and the MEF assigns every shared key's KeID,
// key ID and Credential-ID (TS-0003 §10.3.4, §10.4), which the answer
// carries back for the line to load into the device.
package forwardapi
