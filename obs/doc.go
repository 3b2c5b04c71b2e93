// Package obs is a trusted On-Boarding Server (OBS) on a factory line: a
// registration authority for the SP (README "Trust model"). It holds one
// key in its own PKCS#11 token, that of the mTLS client certificate the
// portal issued it, and certifies nothing itself: it forwards each
// device's CSR, or a 32-byte shared key it drew from crypto/rand, with the
// device's enrolment token to the SP's POST /mef/v1/forward in batches.
// The SP's CA signs every certificate and the MEF names every key, and the
// answer is what the line loads into the device.
//
// Work goes through a spool directory:
//
//	in/        jobs the line drops (JSON, written under a dot name and renamed):
//	           {"bundle": {...}, "csr": "PEM"} or {"bundle": {...}, "key": {"suid": 22, "targetIds": [...]}}
//	out/       <assigned ID>.json, 0600: what the line loads into the device
//	           (certificate + chain + SP root, or the key and the IDs the SP
//	           assigned), written once the SP recorded it
//	outbox/    <job ID>.json, 0600: forward items not yet answered by the SP
//	refused/   items the SP refused (its code and message) and jobs the OBS
//	           refused itself (source "obs")
//
// Crash safety. Every file is written durably (temporary dot file, fsync,
// rename, fsync of the directory). A job goes: forward item made → outbox
// record durable → job removal durable → sent → the SP's answer written to
// out/ durably → record removed. A job's ID is the SHA-256 of its file, and
// the outbox record carries it, so a job found again after a crash together
// with its record is finished from the record (same item), never
// provisioned twice; a job found without a record was never sent, and is
// provisioned afresh. Nothing is sent before its record is durable, and a
// record leaves the outbox only when the SP's answer for it is durable in
// out/ (recorded or replayed) or refused/ (refused). Each item carries a
// stable request ID, hex SHA-256(token || CSR or key), so a resend after a
// lost answer is a replay to the SP, answered with the credential recorded
// the first time, never a second one. A record is not sent while its job
// is still being finished (in-process), and at start the interrupted jobs
// are finished before anything is sent. Refusals the SP marks transient
// (forwardapi.Transient) stay in the outbox and are sent again. A job file
// that is not JSON and younger than 5 s is left for the next round: the
// line may still be writing it.
package obs
