package store

import "context"

// InsertRevokedForTest writes credentials in transactions of 1,000 rows
// (pipelined), for benchmarks that need a registry of 100,000 revoked
// certificates without 100,000 commits. Test-only: production writes go
// through RegisterCredential, Redeem and Revoke.
func (s *Store) InsertRevokedForTest(ctx context.Context, creds []Credential) error {
	for start := 0; start < len(creds); start += 1000 {
		part := creds[start:min(start+1000, len(creds))]
		var writes []stmt
		for _, c := range part {
			ins, err := insertCredentialStmt(c)
			if err != nil {
				return err
			}
			writes = append(writes, ins)
		}
		if err := s.tx(ctx, "test_insert", func(q querier) error { return execBatch(ctx, q, writes) }); err != nil {
			return err
		}
	}
	return nil
}
