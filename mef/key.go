package mef

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/store"
)

// Key modes: where an RSPF shared key's Ke comes from (docs/onem2m.md
// "Key hierarchy").
const (
	// KeyModeExporter is TS-0003 §10.3 and the default: Ke and the
	// RelativeKeID are the RFC 5705 export of the device's TLS session with
	// the MEF. Both ends compute them; the answer carries identifiers only.
	KeyModeExporter = "exporter"
	// KeyModeMaster is credfactory's own "master mode", not TS-0003: Ke =
	// HMAC_HSM(master, label || 0x00 || KeID), and the derived key is sent
	// to the device in the answer. For devices that cannot run the exporter
	// (a line that provisions on the device's behalf, bulk tooling).
	KeyModeMaster = "master"
)

// KeyRequest asks for a shared key on the RSPF path (JSON only).
type KeyRequest struct {
	Token      string
	AssignedID string
	SUID       kdf.SUID
	// TargetIDs are the Targets allowed to fetch the key from the MAF; for a
	// usage-constrained key (SUID 23-25) they are Target-FQDNs, and each
	// Target gets its own key (TS-0003 §10.3 hashes the Target-FQDN).
	TargetIDs []string
	RequestID string
	Peer      []byte // SHA-256 of the TLS client certificate, if any
	// Mode is KeyModeExporter or KeyModeMaster; empty: the MEF's
	// configured default (Config.KeyMode).
	Mode string
	// Export is the RFC 5705 exporter of the TLS session the request came
	// over (nil if none); exporter mode needs it.
	Export kdf.Exporter
}

// TargetKey is a master-mode usage-constrained key as one Target receives
// it.
type TargetKey struct {
	TargetID string `json:"targetId"`
	Key      []byte `json:"key"` // base64 on the wire (encoding/json)
}

// KeyResult is a provisioned key's identifiers and, in master mode only,
// the key: in exporter mode the device derives it itself.
type KeyResult struct {
	Mode string
	// Key is the master-mode Km or Kpsa; nil in exporter mode and for Kuc.
	Key []byte
	// TargetKeys are the master-mode Kuc of each Target; nil otherwise.
	TargetKeys []TargetKey
	Credential store.Credential
	Replayed   bool
}

var (
	errBadKeyRequest = fail(http.StatusBadRequest, "bad_key_request", "a key request needs an RSPF-provisioned SUID (21-25) and, for 23-25, a target")
	errBadKeyMode    = fail(http.StatusBadRequest, "bad_key_mode", `key.mode is "exporter" (TS-0003 §10.3, the default) or "master"`)
	// errTLSExport: the session cannot give the enrolment key. Nothing is
	// read or written before this check: the token stays unspent.
	errTLSExport = fail(http.StatusBadRequest, "tls_export_unavailable",
		"exporter mode derives the key from this TLS session (RFC 5705, TS-0003 §10.3), and the session cannot export keying material: "+
			"connect with TLS 1.3, or TLS 1.2 with the Extended Master Secret extension (RFC 7627), directly to the MEF (not through a TLS-terminating proxy)")
	errSessionUsed = fail(http.StatusConflict, "tls_session_used",
		"this TLS session already gave an enrolment key (its KeID is taken): each exporter-mode enrolment needs its own TLS connection")
)

// EnrolKey redeems a token for a shared key from the TS-0003 §10.3
// hierarchy: Km (SUID 21), Kpsa (22) or a usage-constrained key (23-25).
// The MAF records the derivation context, never the key.
//
// Exporter mode: Ke and RelativeKeID come from the request's TLS session;
// the MEF seals Ke with the HSM's key-encryption key into the context (the
// session is gone by the time a Target fetches) and answers with the
// identifiers only. Master mode: Ke comes from the HSM master key, and the
// key is re-derived to answer, here and on a retry.
func (m *MEF) EnrolKey(ctx context.Context, req KeyRequest) (KeyResult, error) {
	if len(req.RequestID) < 16 || len(req.RequestID) > 128 {
		// It is what a retry presents with the token to get the key again:
		// it must be as unguessable as a secret (16+ random characters).
		return KeyResult{}, fail(http.StatusBadRequest, "bad_request_id", "a key request needs a requestId of 16 to 128 random characters: a retry with the same ID gets the same key")
	}
	mode := req.Mode
	if mode == "" {
		mode = m.cfg.KeyMode
	}
	if mode != KeyModeExporter && mode != KeyModeMaster {
		return KeyResult{}, errBadKeyMode
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
		if kind != kdf.CredentialKmID && kind != kdf.CredentialKpsaID {
			if err := kdf.CheckFQDN(t); err != nil {
				return KeyResult{}, fail(http.StatusBadRequest, "bad_target", "a usage-constrained key (SUID 23-25) is derived for each Target's FQDN (TS-0003 §10.3): "+err.Error())
			}
		}
	}
	var rel, ke []byte
	if mode == KeyModeExporter {
		ekmRel, ekmKe, err := kdf.ExportEnrolmentKey(req.Export)
		if err != nil {
			e := *errTLSExport
			e.Err = err
			return KeyResult{}, &e
		}
		rel, ke = ekmRel, ekmKe
		defer clear(ke)
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

	if rel == nil {
		if rel, err = kdf.NewRelativeID(); err != nil {
			return KeyResult{}, err
		}
	}
	keID := kdf.KeID(rel, m.cfg.FQDN)
	var kctx kdf.Context
	var keyID string
	relHex := hex.EncodeToString(rel)
	switch req.SUID {
	case kdf.SUIDRSPFMAF:
		mafID := m.cfg.MAFFQDN
		if mode == KeyModeExporter {
			// The device reads the MAF-ID from the KmID, which is lower
			// case (TS-0003 §10.6); master-mode contexts keep the
			// configured spelling, as their keys were derived with it.
			mafID = strings.ToLower(mafID)
		}
		kctx = kdf.KmContext(keID, mafID)
		keyID, err = kdf.KmID(relHex, m.cfg.MAFFQDN)
	case kdf.SUIDRSPFSAEF:
		kctx = kdf.KpsaContext(keID, e.AssignedID)
		keyID, err = kdf.KpsaID(relHex, m.cfg.FQDN)
	default:
		kctx = kdf.KucContext(keID, req.SUID, "")
		keyID = keID
	}
	if err != nil {
		return KeyResult{}, err
	}
	if err := kctx.Validate(); err != nil {
		return KeyResult{}, fail(http.StatusBadRequest, "bad_key_request", err.Error())
	}
	if mode == KeyModeExporter {
		// One TLS session has one export, so one KeID: a second enrolment
		// over the same connection (another token, another device) would
		// name two devices' keys with it. The registry's unique key ID
		// refuses it too; this read answers before the HSM is used.
		if err := m.sessionUnused(ctx, relHex); err != nil {
			return KeyResult{}, err
		}
		sealed, err := m.reg.SealEnrolmentKey(ctx, keID, ke)
		if err != nil {
			return KeyResult{}, err
		}
		kctx = kctx.WithSealedKe(sealed)
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
		if mode == KeyModeExporter && errors.Is(err, store.ErrConflict) {
			return KeyResult{}, errSessionUsed
		}
		return KeyResult{}, tokenErr(err)
	}
	if got.Replayed {
		return m.recordedKey(ctx, got.Credential.ID)
	}
	return m.answerKey(ctx, got.Credential, false, mode)
}

// sessionUnused refuses a TLS session whose RelativeKeID already names a
// credential, under either host a key ID of it can carry.
func (m *MEF) sessionUnused(ctx context.Context, relHex string) error {
	hosts := []string{m.cfg.FQDN}
	if !strings.EqualFold(m.cfg.MAFFQDN, m.cfg.FQDN) {
		hosts = append(hosts, m.cfg.MAFFQDN)
	}
	for _, h := range hosts {
		_, err := m.reg.Get(ctx, store.ByKeyID, relHex+"@"+strings.ToLower(h))
		switch {
		case err == nil:
			return errSessionUsed
		case !errors.Is(err, store.ErrNotFound):
			return tokenErr(err)
		}
	}
	return nil
}

func (m *MEF) recordedKey(ctx context.Context, credentialID string) (KeyResult, error) {
	c, err := m.reg.Get(ctx, store.ByID, credentialID)
	if err != nil {
		return KeyResult{}, tokenErr(err)
	}
	if c.Type != store.TypePSK || c.Status != store.StatusActive {
		return KeyResult{}, errTokenRedeemed
	}
	return m.answerKey(ctx, c, true, "")
}

// answerKey is the enrolment answer for a recorded key: in master mode
// with the key (for a Kuc, one per Target), in exporter mode without. mode
// is the key's mode when the caller knows it (it just recorded the key);
// empty, the stored context says.
func (m *MEF) answerKey(ctx context.Context, c store.Credential, replayed bool, mode string) (KeyResult, error) {
	if mode == "" {
		kctx, err := kdf.UnmarshalContext(c.KDFContext)
		if err != nil {
			return KeyResult{}, err
		}
		mode = KeyModeMaster
		if kctx.Root == kdf.RootExporter {
			mode = KeyModeExporter
		}
	}
	res := KeyResult{Mode: mode, Credential: c, Replayed: replayed}
	if mode == KeyModeExporter {
		return res, nil
	}
	var err error
	// The MEF records Km for SUID 21, Kpsa for 22, a Kuc for 23-25.
	if c.SUID == int(kdf.SUIDRSPFMAF) || c.SUID == int(kdf.SUIDRSPFSAEF) {
		if res.Key, err = m.reg.Key(ctx, c); err != nil {
			// Recorded but not derived (HSM trouble): the client's retry
			// with the same request ID re-derives it.
			return KeyResult{}, tokenErr(err)
		}
		return res, nil
	}
	for _, t := range c.TargetIDs {
		k, err := m.reg.DeriveFor(ctx, c, t)
		if err != nil {
			return KeyResult{}, tokenErr(err)
		}
		res.TargetKeys = append(res.TargetKeys, TargetKey{TargetID: t, Key: k})
	}
	return res, nil
}
