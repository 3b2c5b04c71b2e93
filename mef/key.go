package mef

import (
	"context"
	"encoding/hex"
	"net/http"
	"strings"

	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
)

// KeyRequest asks for a shared key on the RSPF path (JSON only).
type KeyRequest struct {
	Token      string
	AssignedID string
	SUID       kdf.SUID
	// TargetIDs are the Targets allowed to fetch the key from the MAF; for a
	// usage-constrained key (SUID 23-25) the first is the Target-FQDN the
	// key is bound to.
	TargetIDs []string
	RequestID string
	Peer      []byte // SHA-256 of the TLS client certificate, if any
}

// KeyResult is a provisioned key and its identifiers.
type KeyResult struct {
	Key        []byte
	Credential store.Credential
	Replayed   bool
}

var errBadKeyRequest = fail(http.StatusBadRequest, "bad_key_request", "a key request needs an RSPF-provisioned SUID (21-25) and, for 23-25, a target")

// EnrolKey redeems a token for a shared key from the TS-0003 §10.3
// hierarchy: Ke = HMAC_HSM(master, label || 0x00 || KeID) and then Km (SUID
// 21), Kpsa (22) or a usage-constrained key (23-25). The MAF records the
// derivation context, never the key; the key is re-derived to answer, here
// and on a retry.
func (m *MEF) EnrolKey(ctx context.Context, req KeyRequest) (KeyResult, error) {
	if len(req.RequestID) < 16 || len(req.RequestID) > 128 {
		// It is what a retry presents with the token to get the key again:
		// it must be as unguessable as a secret (16+ random characters).
		return KeyResult{}, fail(http.StatusBadRequest, "bad_request_id", "a key request needs a requestId of 16 to 128 random characters: a retry with the same ID gets the same key")
	}
	var kind kdf.CredentialType
	switch req.SUID {
	case kdf.SUIDRSPFMAF:
		kind = kdf.CredentialKmID
	case kdf.SUIDRSPFSAEF:
		kind = kdf.CredentialKpsaID
	case kdf.SUIDRSPFESPrim, kdf.SUIDRSPFESDataEncryption, kdf.SUIDRSPFESDataSignature:
		kind = kdf.CredentialType(int(req.SUID) - 10) // 23-25 -> 13-15
		if len(req.TargetIDs) == 0 {
			return KeyResult{}, errBadKeyRequest
		}
	default:
		return KeyResult{}, errBadKeyRequest
	}
	for _, t := range req.TargetIDs {
		if t == "" || len(t) > 255 || strings.ContainsAny(t, " \t\r\n") {
			return KeyResult{}, fail(http.StatusBadRequest, "bad_target", "target IDs are non-empty FQDNs or IDs without spaces")
		}
	}
	red := store.Redemption{TokenHash: tokenHash(req.Token), RequestID: req.RequestID, AssignedID: req.AssignedID,
		Mode: store.ModeUntrusted, DeviceCertSHA256: req.Peer, Now: m.now()}
	e, replay, err := m.precheck(ctx, red)
	if err != nil {
		return KeyResult{}, err
	}
	if replay {
		return m.recordedKey(ctx, *e.CredentialID)
	}

	rel, err := kdf.NewRelativeID()
	if err != nil {
		return KeyResult{}, err
	}
	keID := kdf.KeID(rel, m.cfg.FQDN)
	var kctx kdf.Context
	var keyID string
	relHex := hex.EncodeToString(rel)
	switch req.SUID {
	case kdf.SUIDRSPFMAF:
		kctx = kdf.KmContext(keID, m.cfg.MAFFQDN)
		keyID, err = kdf.KmID(relHex, m.cfg.MAFFQDN)
	case kdf.SUIDRSPFSAEF:
		kctx = kdf.KpsaContext(keID, e.AssignedID)
		keyID, err = kdf.KpsaID(relHex, m.cfg.FQDN)
	default:
		kctx = kdf.KucContext(keID, req.SUID, req.TargetIDs[0])
		keyID = keID
	}
	if err != nil {
		return KeyResult{}, err
	}
	if err := kctx.Validate(); err != nil {
		return KeyResult{}, fail(http.StatusBadRequest, "bad_key_request", err.Error())
	}
	raw, err := kctx.Marshal()
	if err != nil {
		return KeyResult{}, err
	}
	targets := req.TargetIDs
	if req.SUID == kdf.SUIDRSPFMAF && len(targets) == 0 {
		targets = []string{m.cfg.MAFFQDN}
	}
	now := m.now()
	red.Credential = store.Credential{ID: kdf.CredentialID(kind, keyID), Type: store.TypePSK, SUID: int(req.SUID),
		KeyID: &keyID, KeID: &keID, KDFContext: raw, TargetIDs: targets, NotBefore: now,
		NotAfter: now.Add(m.cfg.KeyLifetime), Source: store.SourceRSPF}
	got, err := m.reg.Redeem(background(ctx), red)
	if err != nil {
		return KeyResult{}, tokenErr(err)
	}
	if got.Replayed {
		return m.recordedKey(ctx, got.Credential.ID)
	}
	key, err := m.reg.Key(ctx, got.Credential)
	if err != nil {
		// Recorded but not derived (HSM trouble): the client's retry with the
		// same request ID re-derives it.
		return KeyResult{}, tokenErr(err)
	}
	return KeyResult{Key: key, Credential: got.Credential}, nil
}

func (m *MEF) recordedKey(ctx context.Context, credentialID string) (KeyResult, error) {
	c, err := m.reg.Get(ctx, store.ByID, credentialID)
	if err != nil {
		return KeyResult{}, tokenErr(err)
	}
	if c.Type != store.TypePSK || c.Status != store.StatusActive {
		return KeyResult{}, errTokenRedeemed
	}
	key, err := m.reg.Key(ctx, c)
	if err != nil {
		return KeyResult{}, tokenErr(err)
	}
	return KeyResult{Key: key, Credential: c, Replayed: true}, nil
}
