// Package tlsticket gives every replica of the server the same TLS session
// ticket keys, derived in the HSM from the key every replica already
// shares, so that a client that reconnects (a renewal, a Target fetching
// its keys, a trusted OBS between batches) resumes its TLS session on
// whichever replica the load balancer picks (RFC 8446 §2.2, RFC 5077)
// instead of paying a full handshake and an HSM signature. Go's own ticket
// keys are random per process, so behind HAProxy a resumption found the
// replica that issued the ticket only by chance.
//
// The keys are never stored: each period's key is HMAC_HSM(master,
// "credfactory TLS session ticket key" || 0x00 || period), and the keys
// rotate with the period (docs/architecture.md "TLS session resumption").
package tlsticket
