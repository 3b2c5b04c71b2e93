package obs

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credfactory/credfactory/client"
)

// Keys are the OBS's private keys; in production hsm.Signers.
type Keys struct {
	// Client is the key of the mTLS client certificate: the only key an
	// OBS holds (it issues nothing; the SP's CA does).
	Client crypto.Signer
}

// OBS provisions jobs from the spool and forwards them to the SP.
type OBS struct {
	cfg       Config
	log       *slog.Logger
	spool     spool
	conn      *client.Conn
	anchorPEM string
	now       func() time.Time

	batch atomic.Int64 // current batch size (halved if the SP says 413)
	// busy holds the job IDs being provisioned: their outbox record is
	// not sent until the job file is gone (see Run).
	busy sync.Map
}

// New loads the client certificate the portal issued, checks it against
// the key and the SP root, and prepares the mTLS connection.
func New(cfg Config, keys Keys, log *slog.Logger) (*OBS, error) {
	if err := cfg.CheckRun(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	anchors, err := loadChain(cfg.TrustAnchor, "trust_anchor")
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, a := range anchors {
		roots.AddCert(a)
	}
	clientChain, err := loadChain(cfg.ClientCert, "client_cert")
	if err != nil {
		return nil, err
	}
	if keys.Client == nil || !samePublicKey(clientChain[0].PublicKey, keys.Client.Public()) {
		return nil, errors.New("client_cert and client_key: the certificate is not for the key")
	}
	if err := verifyChain(clientChain, roots, time.Now()); err != nil {
		return nil, fmt.Errorf("client_cert %s: %w", cfg.ClientCert, err)
	}
	cert := tls.Certificate{PrivateKey: keys.Client, Leaf: clientChain[0]}
	for _, c := range clientChain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	var anchorPEM []byte
	for _, a := range anchors {
		anchorPEM = append(anchorPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.Raw})...)
	}
	o := &OBS{
		cfg: cfg, log: log, spool: spool{cfg.Spool}, now: time.Now,
		conn:      client.NewConn(cfg.SPURL, anchors, &cert),
		anchorPEM: string(anchorPEM),
	}
	o.batch.Store(int64(cfg.BatchSize))
	if err := o.spool.make(); err != nil {
		return nil, err
	}
	return o, nil
}

// samePublicKey compares keys by their encoding, whatever their type.
func samePublicKey(a, b crypto.PublicKey) bool {
	da, err1 := x509.MarshalPKIXPublicKey(a)
	db, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(da, db)
}

func loadChain(path, name string) ([]*x509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, raw = pem.Decode(raw)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", name, path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s %s: no PEM certificate", name, path)
	}
	return certs, nil
}

// verifyChain checks that chain[0] chains through the rest to one of roots
// and is valid now: a wrong file is found at start, not at the SP.
func verifyChain(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) error {
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err
}

// Summary counts what one Run did.
type Summary struct {
	Provisioned int // jobs provisioned (items in the outbox; results in out/ once the SP answers)
	Rejected    int // jobs the OBS refused itself (moved to refused/)
	Recorded    int // items the SP recorded
	Replayed    int // items the SP already had (a resend)
	Refused     int // items the SP refused (moved to refused/)
	Pending     int // items still in the outbox at the end
	JobsLeft    int // jobs still in in/ at the end (HSM trouble)
}

func (s Summary) String() string {
	return fmt.Sprintf("provisioned %d, rejected %d, recorded %d, replayed %d, refused %d, pending %d, jobs left %d",
		s.Provisioned, s.Rejected, s.Recorded, s.Replayed, s.Refused, s.Pending, s.JobsLeft)
}

type counters struct {
	provisioned, rejected, recorded, replayed, refused atomic.Int64
}

// ErrIncomplete is returned by a once run that left something undone.
var ErrIncomplete = errors.New("obs: not everything was recorded")

// Run first finishes jobs a crash interrupted and sends what is in the
// outbox, then provisions the jobs in in/ and forwards them. With once it
// does one round of each and returns ErrIncomplete (wrapped) if anything
// was refused or is still unsent; otherwise it polls every flush_interval
// until ctx is done.
func (o *OBS) Run(ctx context.Context, once bool) (Summary, error) {
	var c counters
	if err := o.recover(&c); err != nil {
		return o.summary(&c), err
	}
	if once {
		if err := o.send(ctx, &c); err != nil {
			o.log.Error("send the outbox", "err", err.Error())
		}
		if err := o.provisionAll(ctx, &c, nil); err != nil {
			return o.summary(&c), err
		}
		sendErr := o.send(ctx, &c)
		s := o.summary(&c)
		switch {
		case sendErr != nil:
			return s, fmt.Errorf("%w: %v", ErrIncomplete, sendErr)
		case s.Refused+s.Rejected+s.Pending+s.JobsLeft > 0:
			return s, ErrIncomplete
		}
		return s, nil
	}

	kick := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(o.cfg.FlushInterval)
		defer t.Stop()
		for {
			if err := o.send(ctx, &c); err != nil && ctx.Err() == nil {
				o.log.Error("send the outbox; retrying at the next flush", "err", err.Error())
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-kick:
			}
		}
	}()
	t := time.NewTicker(o.cfg.FlushInterval)
	defer t.Stop()
	for {
		if err := o.provisionAll(ctx, &c, kick); err != nil && ctx.Err() == nil {
			o.log.Error("provision jobs", "err", err.Error())
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			s := o.summary(&c)
			o.log.Info("stopped", "summary", s.String())
			return s, nil
		case <-t.C:
		}
	}
}

func (o *OBS) summary(c *counters) Summary {
	s := Summary{Provisioned: int(c.provisioned.Load()), Rejected: int(c.rejected.Load()),
		Recorded: int(c.recorded.Load()), Replayed: int(c.replayed.Load()), Refused: int(c.refused.Load())}
	if names, err := o.spool.list(DirOutbox); err == nil {
		s.Pending = len(names)
	}
	if names, err := o.spool.list(DirIn); err == nil {
		s.JobsLeft = len(names)
	}
	return s
}

// recover finishes the jobs whose outbox record exists: a crash came
// between making the record and removing the job. It runs before anything
// is sent, so every such record is still there.
func (o *OBS) recover(c *counters) error {
	names, err := o.spool.list(DirIn)
	if err != nil {
		return err
	}
	for _, name := range names {
		raw, err := os.ReadFile(filepath.Join(o.spool.dir(DirIn), name))
		if err != nil {
			continue
		}
		id := jobID(raw)
		rec, err := o.readRecord(id + ".json")
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := o.finish(name, rec); err != nil {
			return err
		}
		c.provisioned.Add(1)
		o.log.Info("finished a job interrupted by a crash", "job", name, "assigned_id", rec.Item.AssignedID)
	}
	return nil
}

func (o *OBS) readRecord(name string) (outboxRecord, error) {
	var rec outboxRecord
	raw, err := os.ReadFile(filepath.Join(o.spool.dir(DirOutbox), name))
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		return rec, fmt.Errorf("outbox %s: %w", name, err)
	}
	return rec, nil
}

// provisionAll provisions every job in in/; every BatchSize jobs it kicks
// the forwarder (daemon mode). It stops early when ctx is done, between
// jobs: a job is never left half done by a signal.
func (o *OBS) provisionAll(ctx context.Context, c *counters, kick chan struct{}) error {
	names, err := o.spool.list(DirIn)
	if err != nil {
		return err
	}
	var errs []error
	for i, name := range names {
		if ctx.Err() != nil {
			break
		}
		if err := o.processJob(name, c); err != nil {
			o.log.Error("provision job; it stays in in/ for the next round", "job", name, "err", err.Error())
			errs = append(errs, err)
			if len(errs) >= 10 {
				break // the HSM is likely down: stop hammering it
			}
		}
		if kick != nil && (i+1)%o.cfg.BatchSize == 0 {
			select {
			case kick <- struct{}{}:
			default:
			}
		}
	}
	if kick != nil {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	return errors.Join(errs...)
}

// processJob provisions one job: its forward item, then its outbox record
// (durable), then the job file is removed. A crash at any point leaves
// either the job alone (it is provisioned afresh: nothing was sent) or the
// job with its record (recover finishes it with the same item). The
// device's result is written when the SP answers (sendBatch).
func (o *OBS) processJob(name string, c *counters) error {
	path := filepath.Join(o.spool.dir(DirIn), name)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	id := jobID(raw)
	o.busy.Store(id, true)
	defer o.busy.Delete(id)
	if rec, err := o.readRecord(id + ".json"); err == nil {
		// The same job content again (dropped twice): same credential.
		return o.finish(name, rec)
	}
	job, err := parseJob(raw, o.now())
	if err != nil && !json.Valid(raw) && o.young(path) {
		// Probably still being written by a line that does not write
		// under a dot name first: look again next round.
		o.log.Debug("job is not JSON yet; waiting for it to settle", "job", name)
		return nil
	}
	var item client.ForwardItem
	if err == nil {
		item, err = o.provision(job)
	}
	var lr *localRefusal
	if errors.As(err, &lr) {
		c.rejected.Add(1)
		o.log.Warn("job refused by the OBS", "job", name, "code", lr.code, "message", lr.message)
		ref := Refusal{Source: "obs", Code: lr.code, Message: lr.message, RefusedAt: o.now().UTC(), JobFile: name, Job: string(raw)}
		if err := o.writeRefusal(id+".json", ref); err != nil {
			return err
		}
		return remove(path)
	}
	if err != nil {
		return err
	}
	rec := outboxRecord{JobID: id, JobFile: name, CreatedAt: o.now().UTC(), Item: item}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := writeDurable(o.spool.dir(DirOutbox), id+".json", data); err != nil {
		return err
	}
	if err := o.finish(name, rec); err != nil {
		return err
	}
	c.provisioned.Add(1)
	kind := "certificate"
	if item.Key != nil {
		kind = "key"
	}
	o.log.Info("provisioned", "job", name, "assigned_id", item.AssignedID, "credential", kind, "request_id", item.RequestID)
	return nil
}

// settle is how long a job that is not JSON may still be being written.
const settle = 5 * time.Second

func (o *OBS) young(path string) bool {
	st, err := os.Stat(path)
	return err == nil && o.now().Sub(st.ModTime()) < settle
}

// finish removes the job file once its record is durable.
func (o *OBS) finish(jobFile string, rec outboxRecord) error {
	if err := remove(filepath.Join(o.spool.dir(DirIn), jobFile)); err != nil {
		return err
	}
	// Durable before the record may be sent (and then removed): a job
	// must never outlive its record, or it would be provisioned again.
	return syncDir(o.spool.dir(DirIn))
}

func (o *OBS) writeRefusal(name string, r Refusal) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return writeDurable(o.spool.dir(DirRefused), name, data)
}
