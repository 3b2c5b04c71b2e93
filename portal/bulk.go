package portal

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/credfactory/credfactory/apierr"
	"github.com/credfactory/credfactory/ratelimit"
	"github.com/credfactory/credfactory/store"
)

// Bulk enrolment bundles (README "Bulk enrolment bundles"): one request
// asks for the bundles of many devices; rows are read, decided and answered
// a chunk at a time, so neither the request nor the answer is ever held
// whole. Every row gets the same checks as POST
// /api/v1/devices/{deviceId}/enrolments (tenant, claimability, proof of
// control, claim limits); a refused row is answered with its own error and
// never holds up the others.

const (
	// BulkChunkRows is how many rows one grouped commit takes. It is part
	// of the idempotency contract: a retry is matched chunk by chunk, so it
	// never changes.
	BulkChunkRows = 1000
	// MaxBulkRows bounds one request: the duplicate check keeps 8 bytes per
	// row for the length of the request.
	MaxBulkRows = 1_000_000
	// MaxBulkBytes bounds one request's body (a million rows with nonce
	// signatures fit).
	MaxBulkBytes = 256 << 20
)

// BulkRow is one row of a bulk request: a device and, unless a
// manufacturer asks for its own devices at the factory, the proof of
// control the single route takes (a claim code, or a nonce and its
// signature).
type BulkRow struct {
	DeviceID string `json:"deviceId"`
	Proof    *Proof `json:"proof,omitempty"`
}

// BulkRowReader yields rows one at a time; io.EOF ends them.
type BulkRowReader func() (BulkRow, error)

// BulkRequest is a bulk request's parameters.
type BulkRequest struct {
	// BatchID is the client's idempotency key: a retry with the same ID and
	// rows gets the same tokens back, never new ones.
	BatchID        string
	OBFID          string
	AssignedIDType string
}

// BulkResult answers one row.
type BulkResult struct {
	Row      int    `json:"row"`
	DeviceID string `json:"deviceId"`
	// Status is issued, replayed (a retry: the token recorded before, still
	// open) or refused (Error says why).
	Status string `json:"status"`
	*Bundle
	Error *RowProblem `json:"error,omitempty"`
}

// RowProblem is a refused row's error, in the shape of the API's errors.
type RowProblem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// BulkSummary closes a bulk answer. Complete is false when the request
// stopped early (Error says why); rows after Rows got no answer, and a
// retry with the same batch ID picks up where it stopped.
type BulkSummary struct {
	BatchID  string      `json:"batchId"`
	Rows     int         `json:"rows"`
	Issued   int         `json:"issued"`
	Replayed int         `json:"replayed"`
	Refused  int         `json:"refused"`
	Complete bool        `json:"complete"`
	Error    *RowProblem `json:"error,omitempty"`
}

// Bulk result statuses.
const (
	BulkIssued   = "issued"
	BulkReplayed = "replayed"
	BulkRefused  = "refused"
)

var (
	batchIDPattern     = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	errBatchID         = apierr.New(http.StatusBadRequest, "bad_idempotency_key", "send an Idempotency-Key (the batch ID) of 1 to 128 letters, digits, '.', '_', ':' or '-'")
	errBatchReused     = apierr.New(http.StatusUnprocessableEntity, "idempotency_key_reused", "this batch ID was used before for other rows or parameters: use a new batch ID")
	errProofRequired   = apierr.New(http.StatusBadRequest, "proof_required", "give a proof of control (claimCode, or nonce with signature); only a manufacturer may omit it, for its own devices it never handed over")
	errBulkVouch       = apierr.New(http.StatusBadRequest, "bad_proof", "vouching is for a trusted OBF's single enrolment route, not bulk requests")
	errBadNonce        = apierr.New(http.StatusForbidden, "bad_nonce", "the nonce is unknown, used or expired: ask for a new one")
	errBadSignature    = apierr.New(http.StatusForbidden, "bad_signature", "the signature does not verify with the device's certificate")
	errDuplicateInBulk = "duplicate_device"
	errTooManyRows     = apierr.New(http.StatusRequestEntityTooLarge, "too_many_rows", fmt.Sprintf("a bulk request holds at most %d rows: split it into batches", MaxBulkRows))
)

// BulkPlan is a checked bulk request, ready to run.
type BulkPlan struct {
	p   *Portal
	who Principal
	req BulkRequest
	obf *store.OBF
	// tokenKey derives the batch's tokens; batchKey names it in the
	// registry; params is the fingerprint of its parameters.
	tokenKey, batchKey, params []byte
	// precharged rows were charged to token_tenant before the answer
	// started (ChargeFirst), and are not charged again.
	precharged int
}

// ChargeFirst charges the request's first row to the caller's
// token_tenant limit before anything is answered, so a tenant out of budget
// gets a plain 429 rather than a 200 whose stream stops at once. The row
// is not charged again when its chunk is.
func (b *BulkPlan) ChargeFirst() error {
	if err := b.p.cfg.Limits.TokenTenant.Check(b.who.Stakeholder.Tenant()); err != nil {
		return err
	}
	b.precharged = 1
	return nil
}

// PlanBulk checks everything about a bulk request that is not per row:
// the caller's role, the batch ID, the OBF and the assigned ID type. The
// batch's token key is derived in the HSM here, once.
func (p *Portal) PlanBulk(ctx context.Context, who Principal, req BulkRequest) (*BulkPlan, error) {
	if err := requireRole(who, store.RoleSubscriber, store.RoleInstaller, store.RoleManufacturer); err != nil {
		return nil, err
	}
	if !batchIDPattern.MatchString(req.BatchID) {
		return nil, errBatchID
	}
	if _, err := newAssignedID(req.AssignedIDType); err != nil {
		return nil, err
	}
	plan := &BulkPlan{p: p, who: who, req: req}
	if req.OBFID != "" {
		o, err := p.st.OBFBy(ctx, "id", req.OBFID)
		// Every token of the request is for the caller's tenant (its own
		// devices, or devices it claims), so the OBF must be that tenant's.
		if errors.Is(err, store.ErrNotFound) || err == nil && (o.StakeholderID != who.Tenant() || o.DisabledAt != nil) {
			return nil, errUnknownOBF
		}
		if err != nil {
			return nil, storeErr(err)
		}
		plan.obf = &o
	}
	if p.claimKey == nil {
		return nil, errors.New("bulk bundles: no HSM key to derive tokens with")
	}
	// The batch's token key: HMAC in the HSM over the caller and its batch
	// ID, so a retry derives the same tokens and nobody without the HSM
	// (a copy of the database included) can compute them. Domain-separated
	// from claim-code hashes and the TS-0003 key derivations by its label.
	msg := lengthPrefixed("credfactory bulk tokens", who.Stakeholder.ID, req.BatchID)
	key, err := p.claimKey.Sum(ctx, msg)
	if err != nil {
		return nil, err
	}
	plan.tokenKey = key
	bk := sha256.Sum256(lengthPrefixed("credfactory bulk batch", who.Stakeholder.ID, req.BatchID))
	plan.batchKey = bk[:]
	plan.params = lengthPrefixed("params", req.OBFID, req.AssignedIDType)
	return plan, nil
}

// BatchID is the plan's batch ID.
func (b *BulkPlan) BatchID() string { return b.req.BatchID }

// bulkRow is a row as read, before the registry decides on it.
type bulkRow struct {
	n   int
	row BulkRow
	// ref is the row's deviceId as given: "deviceId" or
	// "deviceId@manufacturerId"; id and mfr are its parts, key the
	// registry key of the device it resolved to (resolve).
	ref, id, mfr, key string
	problem           *apierr.Error // refused before the registry: bad shape or duplicate
	kind              string        // "", "claim" or "nonce"
	code              string
	sig               []byte
	claimMAC          []byte
	token             string
}

// Run reads rows from next, a chunk at a time, and calls emit with each
// row's result in row order. It stops early (summary.Complete false, and
// the error returned) on a broken body, a rate limit, or a registry
// failure: every chunk before it is committed and answered, none after it
// is touched, and the chunk it stopped in wrote nothing. A failing emit (the
// client went away) stops it too.
//
// Two stages overlap, so a request keeps both cores busy: this goroutine
// reads and prepares the next chunk (parsing, checks, claim-code MACs in the
// HSM, token derivation) while another commits the previous one and writes
// its answer. Only this goroutine reads the body; the other is waited for
// before Run returns, so at most three chunks are ever in memory.
func (b *BulkPlan) Run(ctx context.Context, next BulkRowReader, emit func(BulkResult) error) (BulkSummary, error) {
	sum := BulkSummary{BatchID: b.req.BatchID}
	queue := make(chan *preparedChunk, 1)
	var failed atomic.Bool
	var commitErr error
	emitFailed := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		for pc := range queue {
			if failed.Load() {
				continue // drained: nothing after a failure is committed
			}
			results, err := b.commit(ctx, pc)
			if err != nil {
				commitErr = err
				failed.Store(true)
				continue
			}
			for _, r := range results {
				switch r.Status {
				case BulkIssued:
					sum.Issued++
				case BulkReplayed:
					sum.Replayed++
				default:
					sum.Refused++
				}
				if err := emit(r); err != nil {
					sum.Rows, commitErr, emitFailed = r.Row, err, true
					failed.Store(true)
					break
				}
			}
			if !failed.Load() {
				sum.Rows = pc.rows[len(pc.rows)-1].n
			}
		}
	}()

	seed := maphash.MakeSeed()
	seen := map[uint64]int{}
	n := 0
	var readErr error
	for index := 0; !failed.Load(); index++ {
		rows := make([]bulkRow, 0, BulkChunkRows)
		for len(rows) < BulkChunkRows {
			row, err := next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				readErr = err
				break
			}
			if n++; n > MaxBulkRows {
				readErr = errTooManyRows
				break
			}
			rows = append(rows, bulkRow{n: n, row: row})
		}
		if readErr != nil || len(rows) == 0 {
			// A chunk cut short is not committed: its retry must see the
			// whole chunk, under the same fingerprint.
			break
		}
		pc, err := b.prepare(ctx, index, rows, seen, seed)
		if err != nil {
			readErr = err
			break
		}
		queue <- pc
		if len(rows) < BulkChunkRows {
			break
		}
	}
	close(queue)
	<-done
	switch {
	case emitFailed:
		return sum, commitErr
	case commitErr != nil:
		return b.stop(&sum, commitErr, sum.Rows)
	case readErr != nil:
		return b.stop(&sum, readErr, sum.Rows)
	}
	sum.Complete = true
	return sum, nil
}

func (b *BulkPlan) stop(sum *BulkSummary, err error, answered int) (BulkSummary, error) {
	e := apierr.As(err)
	sum.Rows = answered
	sum.Error = &RowProblem{Code: e.Code, Message: fmt.Sprintf("%s (stopped after row %d; retry with the same batch ID to continue)", e.Message, answered)}
	return *sum, storeErr(err)
}

// preparedChunk is a chunk read and checked, its tokens derived, ready for
// its transaction.
type preparedChunk struct {
	index       int
	rows        []bulkRow
	fingerprint []byte
	valid       int
	items       []store.BulkItem
	itemRows    []int
}

// prepare checks a chunk's rows, fingerprints them, hashes their claim
// codes in the HSM back to back and derives their tokens. It writes nothing.
func (b *BulkPlan) prepare(ctx context.Context, index int, rows []bulkRow, seen map[uint64]int, seed maphash.Seed) (*preparedChunk, error) {
	fp := sha256.New()
	fp.Write(b.params)
	var claimMsgs [][]byte
	var claimRows []int
	pc := &preparedChunk{index: index, rows: rows}
	for i := range rows {
		r := &rows[i]
		pr := Proof{}
		if r.row.Proof != nil {
			pr = *r.row.Proof
		}
		fp.Write(lengthPrefixed(strconv.Itoa(r.n), r.row.DeviceID, pr.ClaimCode, pr.Nonce, pr.Signature, strconv.FormatBool(pr.Vouch)))
		r.ref = strings.TrimSpace(r.row.DeviceID)
		r.id, r.mfr, _ = strings.Cut(r.ref, "@")
		r.problem = checkBulkRow(r, pr)
		if r.problem == nil {
			h := maphash.String(seed, r.ref)
			if first, dup := seen[h]; dup {
				r.problem = apierr.New(http.StatusConflict, errDuplicateInBulk, fmt.Sprintf("the device is already in row %d of this request", first))
			} else {
				seen[h] = r.n
			}
		}
		if r.problem != nil {
			continue
		}
		pc.valid++
		if r.kind == "claim" {
			claimMsgs = append(claimMsgs, claimMessage(r.id, r.code))
			claimRows = append(claimRows, i)
		}
	}
	pc.fingerprint = fp.Sum(nil)
	if len(claimMsgs) > 0 {
		macs, err := sumEach(ctx, b.p.claimKey, claimMsgs)
		if err != nil {
			return nil, err
		}
		for j, i := range claimRows {
			rows[i].claimMAC = macs[j]
		}
	}
	if err := b.resolve(ctx, rows); err != nil {
		return nil, err
	}
	for i := range rows {
		r := &rows[i]
		if r.problem != nil {
			continue
		}
		mac := hmac.New(sha256.New, b.tokenKey)
		mac.Write([]byte(r.ref))
		r.token = base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
		pc.items = append(pc.items, store.BulkItem{DeviceID: r.key, TokenHash: sha(r.token)})
		pc.itemRows = append(pc.itemRows, i)
	}
	return pc, nil
}

// resolve finds the registry key of each valid row's device, as the single
// route does (Portal.enrollable): the one the caller sees, else the one
// claimable device of the ID, else among several claimable ones the one
// whose claim code the row carries; naming the manufacturer
// (deviceId@manufacturerId) narrows the choice. A row naming several with
// nothing to tell them apart is refused as ambiguous. The transaction
// decides on the device again (decide): this only picks which one.
func (b *BulkPlan) resolve(ctx context.Context, rows []bulkRow) error {
	var ids []string
	for i := range rows {
		if rows[i].problem == nil {
			ids = append(ids, rows[i].id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	named, err := b.p.st.DevicesNamedIn(ctx, ids)
	if err != nil {
		return err
	}
	for i := range rows {
		r := &rows[i]
		if r.problem != nil {
			continue
		}
		r.key = r.id // nothing of that name: the transaction finds no device
		ds := named[r.id]
		if r.mfr != "" {
			ds = slices.DeleteFunc(ds, func(d store.Device) bool { return d.ManufacturerID != r.mfr })
		}
		d, ok, err := visible(b.who, ds)
		var ae *apierr.Error
		switch {
		case errors.As(err, &ae):
			r.problem = ae
			continue
		case ok:
			r.key = d.ID
			continue
		}
		ds = slices.DeleteFunc(ds, func(d store.Device) bool { return !claimable(d) })
		switch {
		case len(ds) == 1:
			r.key = ds[0].ID
		case len(ds) > 1 && r.kind != "claim":
			r.problem = errAmbiguousDevice
		case len(ds) > 1:
			r.key = ds[0].ID
			for _, d := range ds {
				if len(d.ClaimCodeHash) > 0 && subtle.ConstantTimeCompare(r.claimMAC, d.ClaimCodeHash) == 1 {
					r.key = d.ID
				}
			}
		}
	}
	return nil
}

// commit records a prepared chunk in one transaction and answers its rows.
func (b *BulkPlan) commit(ctx context.Context, pc *preparedChunk) ([]BulkResult, error) {
	p, who, rows, itemRows := b.p, b.who, pc.rows, pc.itemRows
	recorded, ok, err := p.st.BulkChunkFingerprint(ctx, b.batchKey, pc.index)
	if err != nil {
		return nil, err
	}
	if ok && !hmac.Equal(recorded, pc.fingerprint) {
		return refuseAll(rows, errBatchReused), nil
	}
	if charge := pc.valid - b.precharged; !ok && charge > 0 {
		// Charged per row, as the single route charges per token; a replayed
		// chunk (a retry) issues nothing and is not charged again.
		if err := p.cfg.Limits.TokenTenant.CheckN(who.Stakeholder.Tenant(), charge); err != nil {
			return nil, err
		}
	}
	b.precharged = 0
	src := ratelimit.AddrOf(who.Source)
	claims := slices.ContainsFunc(rows, func(r bulkRow) bool { return r.problem == nil && strings.HasPrefix(r.kind, "claim") })
	if wait := p.claimSources.Wait(src); claims && wait > 0 {
		return nil, &apierr.Error{Status: http.StatusTooManyRequests, Code: "claim_locked",
			Message: "too many wrong claim codes from this address: try again later", RetryAfter: int(wait.Seconds()) + 1}
	}
	var outs []store.BulkOutcome
	if len(pc.items) > 0 {
		now := p.now()
		outs, err = p.st.IssueBulk(ctx, store.BulkChunk{BatchKey: b.batchKey, Index: pc.index, Fingerprint: pc.fingerprint,
			StakeholderID: who.Stakeholder.ID, Actor: who.actor(), Now: now,
			ClaimMaxFailures: p.cfg.ClaimMaxFailures, ClaimMaxFailuresAccount: p.cfg.ClaimMaxFailuresAccount, ClaimLockout: p.cfg.ClaimLockout,
			Items: pc.items}, func(i int, d *store.Device) store.BulkDecision {
			return b.decide(&rows[itemRows[i]], d, now)
		})
		if errors.Is(err, store.ErrBatchMismatch) {
			return refuseAll(rows, errBatchReused), nil
		}
		if err != nil {
			return nil, err
		}
		for _, o := range outs {
			if errors.Is(o.Err, errWrongClaim) {
				p.claimSources.Failed(src)
			}
		}
	}

	results := make([]BulkResult, len(rows))
	for i := range rows {
		r := &rows[i]
		results[i] = BulkResult{Row: r.n, DeviceID: clip(r.row.DeviceID)}
		if r.problem != nil {
			results[i].Status, results[i].Error = BulkRefused, problemOf(r.problem)
		}
	}
	for j, o := range outs {
		res := &results[itemRows[j]]
		if o.Err != nil {
			res.Status, res.Error = BulkRefused, problemOf(bulkErr(o.Err))
			continue
		}
		res.Status = BulkIssued
		if o.Replayed {
			res.Status = BulkReplayed
		} else {
			p.cfg.Observer.ObserveTokenIssued(o.Enrolment.Mode)
		}
		bundle := &Bundle{Token: rows[itemRows[j]].token, AssignedID: o.Enrolment.AssignedID, ExpiresAt: o.Enrolment.ExpiresAt}
		if o.Enrolment.Mode == store.ModeUntrusted {
			bundle.MEFURI, bundle.TrustAnchor, bundle.TrustAnchorSHA256 = p.cfg.MEFURI, p.anchorPEM, p.anchorSHA256
		}
		res.Bundle = bundle
	}
	return results, nil
}

// checkBulkRow checks a row's shape: its device ID and that its proof is
// one the bulk route takes.
func checkBulkRow(r *bulkRow, pr Proof) *apierr.Error {
	if !deviceIDPattern.MatchString(r.id) || strings.Contains(r.mfr, "@") {
		return apierr.New(http.StatusBadRequest, "bad_device_id", "deviceId must be 1-128 letters, digits, '.', '_', ':' or '-', optionally followed by @manufacturerId")
	}
	switch {
	case pr.Vouch:
		return errBulkVouch
	case pr.ClaimCode != "" && (pr.Nonce != "" || pr.Signature != ""):
		return errBadProof
	case pr.ClaimCode != "":
		r.kind, r.code = "claim", strings.TrimSpace(pr.ClaimCode)
		if len(r.code) > maxClaimCode {
			// Longer than any stored code: it cannot be right, and hashing
			// it would only cost the HSM.
			r.kind = "claim-too-long"
		}
	case pr.Nonce != "" || pr.Signature != "":
		if pr.Nonce == "" || pr.Signature == "" {
			return errBadProof
		}
		sig, err := base64.StdEncoding.DecodeString(pr.Signature)
		if err != nil {
			return apierr.New(http.StatusBadRequest, "bad_signature", "signature must be base64")
		}
		r.kind, r.code, r.sig = "nonce", pr.Nonce, sig
	}
	return nil
}

// decide is the single route's Enrol and checkProof for one row, against
// the device as the chunk's transaction reads it.
func (b *BulkPlan) decide(r *bulkRow, d *store.Device, now time.Time) store.BulkDecision {
	p, who := b.p, b.who
	refuse := func(err error) store.BulkDecision { return store.BulkDecision{Err: err} }
	if d == nil {
		return refuse(errDeviceNotFound)
	}
	var tenant string
	switch {
	case who.sees(d.Tenant):
		tenant = d.Tenant
	case claimable(*d) && requireRole(who, store.RoleSubscriber, store.RoleInstaller) == nil:
		tenant = who.Tenant()
	default:
		return refuse(errDeviceNotFound) // another tenant's device: as if it did not exist
	}
	if d.State == store.DeviceRevoked {
		return refuse(apierr.New(http.StatusConflict, "device_revoked", "this device's credentials were revoked: it must be released before it enrols again"))
	}
	claim := tenant != d.Tenant
	dec := store.BulkDecision{}
	switch r.kind {
	case "":
		// A manufacturer's own device at the factory: it uploaded the
		// device and never handed it over, so the upload is its proof. Any
		// other device needs a proof of control, as on the single route.
		if who.Stakeholder.Role != store.RoleManufacturer || claim || d.ManufacturerID != who.Stakeholder.ID ||
			d.OwnerID != nil || d.ReleasedAt != nil {
			return refuse(errProofRequired)
		}
	case "claim", "claim-too-long":
		if len(d.ClaimCodeHash) == 0 {
			if claim {
				return refuse(errDeviceNotFound)
			}
			return refuse(apierr.New(http.StatusConflict, "no_claim_code", "this device was pre-enrolled without a claim code"))
		}
		dec.ClaimAttempt = true
		if r.claimMAC == nil || subtle.ConstantTimeCompare(r.claimMAC, d.ClaimCodeHash) != 1 {
			dec.Err = errWrongClaim
			return dec
		}
	case "nonce":
		if len(d.DeviceCertDER) == 0 {
			if claim {
				return refuse(errDeviceNotFound)
			}
			return refuse(apierr.New(http.StatusConflict, "no_device_certificate", "this device has no certificate to prove control with"))
		}
		cert, err := x509.ParseCertificate(d.DeviceCertDER)
		if err != nil {
			return refuse(fmt.Errorf("device certificate of %s: %w", d.ID, err))
		}
		if !verifyNonce(cert.PublicKey, []byte(r.code), r.sig) {
			return refuse(errBadSignature)
		}
		dec.NonceHash = sha(r.code)
	}
	mode, obfID := store.ModeUntrusted, (*string)(nil)
	if b.obf != nil {
		obfID = &b.obf.ID
		if b.obf.Trusted {
			mode = store.ModeTrusted
		}
	}
	assigned := ""
	if d.AssignedID != nil {
		assigned = *d.AssignedID // a re-request keeps the device's identity
	} else {
		var err error
		if assigned, err = newAssignedID(b.req.AssignedIDType); err != nil {
			return refuse(err)
		}
	}
	dec.Enrolment = store.Enrolment{AssignedID: assigned, StakeholderID: who.Stakeholder.ID, Tenant: tenant,
		OBFID: obfID, Mode: mode, ExpiresAt: now.Add(p.cfg.TokenTTL)}
	if mode == store.ModeUntrusted {
		dec.Enrolment.DeviceCertSHA256 = d.DeviceCertSHA256
	}
	dec.Audit = map[string]any{"assignedId": assigned, "mode": mode, "batchId": b.req.BatchID}
	if claim {
		dec.Audit["claimedFrom"] = d.Tenant
	}
	if obfID != nil {
		dec.Audit["obfId"] = *obfID
	}
	return dec
}

// bulkErr maps what the registry said about a row to the API's error.
func bulkErr(err error) error {
	switch {
	case errors.Is(err, store.ErrClaimLocked):
		return errClaimLocked
	case errors.Is(err, store.ErrNonceMismatch):
		return errBadNonce
	case errors.Is(err, store.ErrNotFound):
		return errDeviceNotFound
	case errors.Is(err, store.ErrTokenRedeemed):
		return apierr.New(http.StatusConflict, "token_redeemed", "this batch's token for the device was redeemed: ask with a new batch ID for a new one")
	case errors.Is(err, store.ErrTokenCancelled):
		return apierr.New(http.StatusConflict, "token_cancelled", "this batch's token for the device was cancelled since (a newer token, or a release): ask with a new batch ID")
	case errors.Is(err, store.ErrTokenExpired):
		return apierr.New(http.StatusConflict, "token_expired", "this batch's token for the device expired: ask with a new batch ID")
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrInvalid):
		return apierr.New(http.StatusConflict, "conflict", "the row conflicts with another: ask again with a new batch ID")
	}
	return err
}

func problemOf(err error) *RowProblem {
	e := apierr.As(err)
	return &RowProblem{Code: e.Code, Message: e.Message}
}

func refuseAll(rows []bulkRow, err *apierr.Error) []BulkResult {
	out := make([]BulkResult, len(rows))
	for i, r := range rows {
		out[i] = BulkResult{Row: r.n, DeviceID: clip(r.row.DeviceID), Status: BulkRefused, Error: problemOf(err)}
	}
	return out
}

func clip(id string) string {
	if len(id) > 140 {
		return id[:140]
	}
	return id
}

// claimMessage is what claimHash keys in the HSM.
func claimMessage(deviceID, code string) []byte {
	msg := make([]byte, 0, 32+len(deviceID)+len(code))
	msg = append(msg, "credfactory claim code\x00"...)
	msg = append(msg, deviceID...)
	msg = append(msg, 0)
	msg = append(msg, code...)
	return msg
}

// EachKeyed is a Keyed that hashes many messages at once (hsm.HMACKey: one
// HSM session, the MACs back to back).
type EachKeyed interface {
	SumEach(ctx context.Context, msgs [][]byte) ([][]byte, error)
}

func sumEach(ctx context.Context, k Keyed, msgs [][]byte) ([][]byte, error) {
	if e, ok := k.(EachKeyed); ok {
		return e.SumEach(ctx, msgs)
	}
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		h, err := k.Sum(ctx, m)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

// lengthPrefixed joins fields unambiguously (each after its length).
func lengthPrefixed(fields ...string) []byte {
	var out []byte
	for _, f := range fields {
		out = binary.BigEndian.AppendUint32(out, uint32(len(f)))
		out = append(out, f...)
	}
	return out
}
