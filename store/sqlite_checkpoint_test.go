package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCheckpointerCopiesWAL: committed pages reach the database file
// without a writer crossing its autocheckpoint threshold, because the
// checkpointer copies them beside it; and the writer's threshold is raised
// from SQLite's default 1,000 pages, so commits stop doing that work.
func TestCheckpointerCopiesWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s := openURLForTest(t, "sqlite://"+path, nil)
	ctx := context.Background()
	var pages int
	if err := s.tx(ctx, "test", func(q querier) error {
		return q.queryRow(ctx, "PRAGMA wal_autocheckpoint").Scan(&pages)
	}); err != nil || pages != writerAutoCheckpoint {
		t.Fatalf("writer wal_autocheckpoint = %d (%v), want %d", pages, err, writerAutoCheckpoint)
	}
	size := func() int64 {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	before := size()
	// ~300 pages: far below the writer's threshold.
	key := bytes.Repeat([]byte{9}, 32)
	if err := s.tx(ctx, "test", func(q querier) error {
		for i := range 300 {
			if _, err := q.exec(ctx, `INSERT INTO bulk_chunks (batch_key, chunk, rows_sha256, created_at) VALUES ($1, $2, $3, $4)`,
				append(key, bytes.Repeat([]byte{byte(i)}, 4000)...), i, key, time.Now().UTC()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for size() < before+300*4000 {
		if time.Now().After(deadline) {
			t.Fatalf("database file %d bytes after 5 s (was %d): the WAL was not checkpointed", size(), before)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
