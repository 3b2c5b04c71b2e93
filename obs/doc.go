// Package obs is a trusted On-Boarding Server (OBS) on a factory line: the
// MEF of the line itself (docs/architecture.md "The two paths", trusted
// path). It holds two keys in its own PKCS#11 token: the key of the mTLS
// client certificate the portal issued it, and the key of the
// name-constrained sub-CA the portal certified. It provisions devices locally
// (a certificate from the sub-CA, or a 32-byte shared key from crypto/rand)
// and forwards every credential with its enrolment token to the SP's POST
// /mef/v1/forward in batches.
//
// Work goes through a spool directory:
//
//	in/        jobs the line drops (JSON, written under a dot name and renamed):
//	           {"bundle": {...}, "csr": "PEM"} or {"bundle": {...}, "key": {"suid": 22, "targetIds": [...]}}
//	out/       <assigned ID>.json, 0600: what the line loads into the device
//	           (certificate + chain + SP root, or the key and its IDs)
//	outbox/    <job ID>.json, 0600: forward items not yet acknowledged by the SP
//	refused/   items the SP refused (its code and message) and jobs the OBS
//	           refused itself (source "obs")
//
// Crash safety. Every file is written durably (temporary dot file, fsync,
// rename, fsync of the directory). A job goes: credential made → outbox
// record durable → out/ result durable → job removal durable. A job's ID is the
// SHA-256 of its file, and the outbox record carries it, so a job found
// again after a crash together with its record is finished from the record
// (same credential), never provisioned twice; a job found without a record
// was never handed out nor sent, and is provisioned afresh. Nothing is sent
// before its record is durable, and a record leaves the outbox only when the
// SP answered "recorded" or "replayed" for it (or refused it, into
// refused/). Each item carries a stable request ID, hex SHA-256(token ||
// credential), so a resend after a lost answer is a replay to the SP, not a
// second credential. A record is not sent while its job is still being
// finished (in-process), and at start the interrupted jobs are finished
// before anything is sent. When the SP refuses an item, the device's result
// moves from out/ to refused/ too (<job ID>.result.json) unless a later job
// replaced it. A job file that is not JSON and younger than 5 s is left for
// the next round: the line may still be writing it.
package obs
