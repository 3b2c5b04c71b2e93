package store

import (
	"context"
	"database/sql"
	"strconv"
	"sync"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// writerAutoCheckpoint is the WAL size, in pages, at which the writer
// checkpoints by itself. At SQLite's default (1,000 pages, ~4 MB) a busy
// registry crossed it every few group commits, and the commit that did
// copied the WAL into the database file and fsynced it while every
// redemption waited behind the one writer. The checkpointer below does that
// work beside the writer; the writer's own checkpoint is only the backstop
// for a checkpointer that falls behind, bounding the WAL at ~64 MB.
// BenchmarkRedeem/sqlite/batched=true/writers=64, five alternating runs
// each: 2,374 -> 3,874 redemptions/s (bench/README.md "Registry engine").
const writerAutoCheckpoint = 16000

// checkpointEvery is how often the checkpointer copies committed frames.
const checkpointEvery = 100 * time.Millisecond

var sqliteWriterDriver = sync.OnceValue(func() string {
	const name = "sqlite3-credfactory-writer"
	sql.Register(name, &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error {
		_, err := c.Exec("PRAGMA wal_autocheckpoint = "+strconv.Itoa(writerAutoCheckpoint), nil)
		return err
	}})
	return name
})

// checkpointer copies committed WAL frames into the database file from a
// connection of its own, with PRAGMA wal_checkpoint(PASSIVE), which waits
// for no reader or writer: the single writer's commits carry only their own
// WAL append and fsync. Durability does not depend on it (a commit is
// durable once its WAL frames are synced, _synchronous=FULL); it only keeps
// the WAL short.
type checkpointer struct {
	db   *sql.DB
	quit chan struct{}
	done chan struct{}
}

func startCheckpointer(db *sql.DB) *checkpointer {
	c := &checkpointer{db: db, quit: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

func (c *checkpointer) run() {
	defer close(c.done)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
			// A failed pass is retried on the next tick; the writer's
			// autocheckpoint bounds the WAL meanwhile.
			_, _ = c.db.ExecContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)")
		}
	}
}

func (c *checkpointer) stop() {
	close(c.quit)
	<-c.done
	c.db.Close()
}
