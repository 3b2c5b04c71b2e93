package store

import (
	"context"
	"strings"
	"testing"
)

// TestHotStatementsAreKeyLookups: the statements of the token, renewal and
// revocation transactions read only the index entries of their own keys,
// at the table sizes every registry starts with (a handful of rows, fresh
// statistics), where PostgreSQL's planner likes to read a whole small
// index instead: under SERIALIZABLE such a read locks every entry of it,
// and concurrent requests for other devices abort each other (SQLSTATE
// 40001). On PostgreSQL every scan in the plan must carry an Index Cond
// (sequential scans are off, as in the store's serializable
// transactions); on SQLite every table access must be a SEARCH.
//
// The "control" row is the revocation as it was before it was written to
// avoid the partial index credentials_active_expiry: the planner really
// chooses the whole-index read for it here, so the test can tell.
func TestHotStatementsAreKeyLookups(t *testing.T) {
	backends(t, func(t *testing.T, s *Store, _ *countingObserver) {
		seedForPlans(t, s)
		where, args := Revocation{DeviceID: "dev-3"}.where(3)
		assigned, aargs := Revocation{AssignedID: "Sdev-3", SUIDs: []int{22}}.where(3)
		devGuard, _ := Revocation{DeviceID: "dev-3"}.guardStmt()
		assignedGuard, _ := Revocation{AssignedID: "Sdev-3"}.guardStmt()
		sup, err := supersedeKeysStmt("Sdev-3", Credential{SUID: 22, TargetIDs: []string{"t"}}, t0)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name    string
			sql     string
			args    []any
			control bool
		}{
			{"token: device", issueTokenDeviceSQL, []any{"dev-3", "Sdev-3", t0, "m1", "m1", true}, false},
			{"token: claim state", claimStateSQL, []any{"dev-3", "m1"}, false},
			{"token: cancel open tokens", cancelOpenTokensSQL, []any{"dev-3"}, false},
			{"claim failure", countClaimFailureStmt("m1", t0, 5).sql, []any{"m1", t0, 5}, false},
			{"revoke a device", revokeSQL(where), append([]any{t0, 0}, args...), false},
			{"revoke by assigned ID and usage", revokeSQL(assigned), append([]any{t0, 0}, aargs...), false},
			{"revoke a device (control)", `UPDATE credentials SET status = 'revoked', revoked_at = $1, revocation_reason = $2
				WHERE ` + where + ` AND status = 'active' RETURNING id`, append([]any{t0, 0}, args...), true},
			{"revoke: device guard", devGuard.sql, devGuard.args, false},
			{"revoke: assigned ID guard", assignedGuard.sql, assignedGuard.args, false},
			{"renew: supersede the certificate", supersedeCertSQL, []any{"cred-3", t0, 4}, false},
			{"redeem: supersede shared keys", sup.sql, sup.args, false},
		} {
			plan := explain(t, s, tc.sql, tc.args...)
			bad := wholeReads(s.Backend(), plan)
			switch {
			case tc.control && s.Backend() != "sqlite" && bad == "":
				t.Errorf("%s: the planner no longer reads a whole index for it, so the test cannot tell:\n%s", tc.name, plan)
			case !tc.control && bad != "":
				t.Errorf("%s reads more than its keys (%s):\n%s", tc.name, bad, plan)
			}
		}
	})
}

// wholeReads names the first step of a plan that reads a table or an index
// without a key condition, or "".
func wholeReads(backend, plan string) string {
	lines := strings.Split(plan, "\n")
	if backend == "sqlite" {
		for _, l := range lines {
			if strings.HasPrefix(strings.TrimLeft(l, " |-`"), "SCAN ") && !strings.Contains(l, "CONSTANT ROW") {
				return strings.TrimSpace(l)
			}
		}
		return ""
	}
	for i, l := range lines {
		switch {
		case strings.Contains(l, "Seq Scan"):
			return strings.TrimSpace(l)
		case strings.Contains(l, "Index Scan") || strings.Contains(l, "Index Only Scan"):
			// Its conditions are the lines indented under it, up to the
			// next node ("->").
			cond := false
			for _, c := range lines[i+1:] {
				if strings.Contains(c, "->") {
					break
				}
				cond = cond || strings.Contains(c, "Index Cond")
			}
			if !cond {
				return strings.TrimSpace(l)
			}
		}
	}
	return ""
}

// seedForPlans writes what a young registry holds before autovacuum has
// looked at it: a few devices with open tokens and active credentials.
func seedForPlans(t *testing.T, s *Store) {
	t.Helper()
	for i := range 6 {
		e := newEnrolment(t, s, nil)
		if i%2 == 1 {
			if _, err := s.Redeem(context.Background(), redemption(e, certCredential())); err != nil {
				t.Fatal(err)
			}
		}
	}
}
