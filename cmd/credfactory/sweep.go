package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/credfactory/credfactory/config"
	"github.com/credfactory/credfactory/metrics"
	"github.com/credfactory/credfactory/store"
)

// startSweeper runs the expiry sweep in the background (store.sweep_interval;
// 0 turns it off) and returns the function that stops it and waits, which
// releases the lease if this replica held it. Every replica runs one; the
// lease lets one of them sweep at a time.
func startSweeper(ctx context.Context, cfg config.Config, st *store.Store, reg *metrics.Registry, log *slog.Logger) func() {
	if cfg.Store.SweepInterval <= 0 {
		log.Info("expiry sweep off (store.sweep_interval is 0)")
		return func() {}
	}
	host, _ := os.Hostname()
	suffix := make([]byte, 4)
	rand.Read(suffix)
	holder := fmt.Sprintf("%s-%d-%x", host, os.Getpid(), suffix)
	obs := reg.SweepObserver()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		st.RunSweeper(ctx, store.SweeperOptions{
			SweepOptions: store.SweepOptions{Holder: holder, Chunk: cfg.Store.SweepChunk,
				// Twice the token lifetime: a chunk's tokens have all
				// expired well before its record goes.
				BulkChunkRetention: 2 * cfg.Portal.TokenTTL},
			Interval: cfg.Store.SweepInterval,
			Report: func(res store.SweepResult, d time.Duration, err error) {
				obs.ObserveSweep(res, d, err)
				switch {
				case err != nil:
					log.Error("expiry sweep", "err", err.Error(), "tokens", res.Tokens, "credentials", res.Credentials, "bulk_chunks", res.BulkChunks, "claim_nonces", res.ClaimNonces)
				case res.Tokens+res.Credentials+res.BulkChunks+res.ClaimNonces > 0:
					// One summary line per run, never a line per row.
					log.Info("expiry sweep", "tokens", res.Tokens, "credentials", res.Credentials, "bulk_chunks", res.BulkChunks, "claim_nonces", res.ClaimNonces, "duration", d.String())
				}
			},
		})
	}()
	return func() { cancel(); <-done }
}
