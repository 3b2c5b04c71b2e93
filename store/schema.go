package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// dialect fills the type tokens of the DDL: the one place the engines'
// vocabularies differ.
type dialect struct {
	replacer *strings.Replacer
}

var (
	// {{key}} is a text key that sorts bytewise on every engine, so keyset
	// paging and ID-prefix ranges mean the same everywhere: PostgreSQL's
	// database collation may be a glibc locale that ignores punctuation.
	pgDialect = dialect{strings.NewReplacer(
		"{{key}}", `TEXT COLLATE "C"`,
		"{{bytes}}", "BYTEA",
		"{{time}}", "TIMESTAMPTZ",
		"{{bool}}", "BOOL",
		"{{int}}", "INT8",
		"{{if_not_exists}}", "IF NOT EXISTS",
	)}
	// CockroachDB's STRING already compares bytewise.
	crdbDialect = dialect{strings.NewReplacer(
		"{{key}}", "STRING",
		"{{bytes}}", "BYTEA",
		"{{time}}", "TIMESTAMPTZ",
		"{{bool}}", "BOOL",
		"{{int}}", "INT8",
		"{{if_not_exists}}", "IF NOT EXISTS",
	)}
	// SQLite: times are integer microseconds (see sqliteQuerier); TEXT
	// compares bytewise (BINARY collation).
	sqliteDialect = dialect{strings.NewReplacer(
		"{{key}}", "TEXT",
		"{{bytes}}", "BLOB",
		"{{time}}", "INTEGER",
		"{{bool}}", "INTEGER",
		"{{int}}", "INTEGER",
		// SQLite has no ADD COLUMN IF NOT EXISTS: Migrate treats its
		// "duplicate column name" error as the column being there.
		"{{if_not_exists}}", "",
	)}
)

func (d dialect) sql(s string) string { return d.replacer.Replace(s) }

// migration is one schema version. Every statement is idempotent (IF NOT
// EXISTS), so replicas starting together may all run it: the version row
// is written last and only once.
type migration struct {
	version int
	name    string
	stmts   []string
	// backfill, when set, runs after stmts and before the version row is
	// written: data a statement cannot compute (it must be idempotent too).
	backfill func(ctx context.Context, s *Store) error
}

// migrations in order. Never edit one that has shipped: add the next.
//
// Primary keys are random (SHA-256 token hashes, random UUIDs, Credential-IDs
// that end in a fingerprint or random hex) and there are no sequences, so
// CockroachDB spreads writes over ranges instead of appending to one.
// Secondary indexes lead with a random or high-cardinality column for the
// same reason. There are no foreign keys: rows are written in the same
// transactions that check their references, and CockroachDB would pay a
// lookup per insert for them.
var migrations = []migration{{
	version: 1,
	name:    "registry",
	stmts: []string{
		`CREATE TABLE IF NOT EXISTS stakeholders (
			id                 TEXT PRIMARY KEY,
			name               TEXT NOT NULL UNIQUE,
			role               TEXT NOT NULL,
			acts_for           TEXT,
			password_hash      TEXT NOT NULL,
			failed_logins      {{int}} NOT NULL DEFAULT 0,
			locked_until       {{time}},
			claim_failures     {{int}} NOT NULL DEFAULT 0,
			claim_locked_until {{time}},
			created_at         {{time}} NOT NULL,
			disabled_at        {{time}}
		)`,
		`CREATE TABLE IF NOT EXISTS sessions (
			id_hash        {{bytes}} PRIMARY KEY,
			stakeholder_id TEXT NOT NULL,
			csrf           TEXT NOT NULL,
			created_at     {{time}} NOT NULL,
			expires_at     {{time}} NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS sessions_stakeholder ON sessions (stakeholder_id)`,
		`CREATE TABLE IF NOT EXISTS api_keys (
			id             TEXT PRIMARY KEY,
			stakeholder_id TEXT NOT NULL,
			name           TEXT NOT NULL,
			key_hash       {{bytes}} NOT NULL UNIQUE,
			created_at     {{time}} NOT NULL,
			last_used_at   {{time}},
			revoked_at     {{time}}
		)`,
		`CREATE INDEX IF NOT EXISTS api_keys_stakeholder ON api_keys (stakeholder_id)`,
		`CREATE TABLE IF NOT EXISTS obfs (
			id                 TEXT PRIMARY KEY,
			stakeholder_id     TEXT NOT NULL,
			name               TEXT NOT NULL,
			kind               TEXT NOT NULL,
			trusted            {{bool}} NOT NULL,
			client_cert_sha256 {{bytes}} UNIQUE,
			client_cert_der    {{bytes}},
			subca_der          {{bytes}},
			created_at         {{time}} NOT NULL,
			disabled_at        {{time}}
		)`,
		`CREATE INDEX IF NOT EXISTS obfs_stakeholder ON obfs (stakeholder_id)`,
		`CREATE TABLE IF NOT EXISTS devices (
			id                 {{key}} PRIMARY KEY,
			manufacturer_id    TEXT NOT NULL,
			owner_id           TEXT,
			tenant             {{key}} NOT NULL,
			claim_code_hash    {{bytes}},
			device_cert_der    {{bytes}},
			device_cert_sha256 {{bytes}},
			state              TEXT NOT NULL,
			assigned_id        TEXT UNIQUE,
			nonce_hash         {{bytes}},
			nonce_expires_at   {{time}},
			claim_failures     {{int}} NOT NULL DEFAULT 0,
			claim_locked_until {{time}},
			created_at         {{time}} NOT NULL,
			updated_at         {{time}} NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS devices_tenant ON devices (tenant, id)`,
		`CREATE INDEX IF NOT EXISTS devices_tenant_state ON devices (tenant, state, id)`,
		`CREATE TABLE IF NOT EXISTS enrolments (
			token_hash         {{bytes}} PRIMARY KEY,
			device_id          TEXT NOT NULL,
			assigned_id        TEXT NOT NULL,
			stakeholder_id     TEXT NOT NULL,
			tenant             TEXT NOT NULL,
			obf_id             TEXT,
			mode               TEXT NOT NULL,
			device_cert_sha256 {{bytes}},
			expires_at         {{time}} NOT NULL,
			state              TEXT NOT NULL,
			created_at         {{time}} NOT NULL,
			redeemed_at        {{time}},
			credential_id      TEXT,
			request_id         TEXT,
			public_key_sha256  {{bytes}}
		)`,
		`CREATE INDEX IF NOT EXISTS enrolments_device ON enrolments (device_id)`,
		`CREATE TABLE IF NOT EXISTS credentials (
			id                   TEXT PRIMARY KEY,
			assigned_id          TEXT NOT NULL,
			device_id            TEXT NOT NULL,
			tenant               TEXT NOT NULL,
			type                 TEXT NOT NULL,
			suid                 {{int}} NOT NULL,
			serial               TEXT UNIQUE,
			cert_sha256          {{bytes}} UNIQUE,
			cert_der             {{bytes}},
			public_key_sha256    {{bytes}},
			key_id               TEXT UNIQUE,
			ke_id                TEXT,
			kdf_context          {{bytes}},
			sealed_key           {{bytes}},
			target_ids           TEXT NOT NULL,
			not_before           {{time}} NOT NULL,
			not_after            {{time}} NOT NULL,
			status               TEXT NOT NULL,
			revoked_at           {{time}},
			revocation_reason    {{int}},
			source               TEXT NOT NULL,
			obf_id               TEXT,
			enrolment_token_hash {{bytes}},
			created_at           {{time}} NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS credentials_assigned ON credentials (assigned_id)`,
		`CREATE INDEX IF NOT EXISTS credentials_device ON credentials (device_id)`,
		`CREATE INDEX IF NOT EXISTS credentials_ke_suid ON credentials (ke_id, suid)`,
		`CREATE TABLE IF NOT EXISTS audit_events (
			id      TEXT PRIMARY KEY,
			at      {{time}} NOT NULL,
			tenant  TEXT NOT NULL,
			actor   TEXT NOT NULL,
			action  TEXT NOT NULL,
			subject TEXT NOT NULL,
			detail  TEXT NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS audit_events_tenant_at ON audit_events (tenant, at)`,
	},
}, {
	// Revocation status for the issuing CA's CRL and OCSP responder (issue
	// 7): which CA signed each certificate (see store/revoked.go), and
	// partial indexes over revoked rows only, so a CRL generation pages
	// through the revoked certificates of one issuer and the staleness
	// check reads one index entry, instead of scanning every credential.
	// Only revocations write these indexes; on CockroachDB the leading
	// issuer column puts them in one range per issuer, acceptable for a
	// write rate that is a small fraction of enrolments.
	version: 2,
	name:    "revocation_status",
	stmts: []string{
		`ALTER TABLE credentials ADD COLUMN {{if_not_exists}} issuer_key_id TEXT`,
		`CREATE INDEX IF NOT EXISTS credentials_revoked ON credentials (issuer_key_id, serial) WHERE status = 'revoked'`,
		`CREATE INDEX IF NOT EXISTS credentials_revoked_at ON credentials (issuer_key_id, revoked_at) WHERE status = 'revoked'`,
		// Certificates whose issuer is not recorded yet: the backfill's
		// work list, empty once it is done, so the sweep can look at it
		// every run for rows a replica of the previous release wrote
		// during a rolling upgrade.
		`CREATE INDEX IF NOT EXISTS credentials_issuer_unknown ON credentials (id) WHERE type = 'x509' AND issuer_key_id IS NULL`,
	},
	backfill: backfillIssuerKeyIDs,
}, {
	// Renewal and expiry (README "Renewal and expiry").
	version: 3,
	name:    "renewal_and_expiry_sweep",
	stmts: []string{
		// renewals links a certificate to the one that replaced it through
		// EST simplereenroll. The primary key on old_id makes "one renewal
		// per certificate" a database fact, so two racing renewals of the
		// same certificate cannot both commit, and a retry finds the
		// certificate the first one issued. A table of its own rather than
		// a column on credentials: the hot credentials table keeps its row
		// width and indexes, and the link is written once per renewal.
		`CREATE TABLE IF NOT EXISTS renewals (
			old_id     TEXT PRIMARY KEY,
			new_id     TEXT NOT NULL UNIQUE,
			created_at {{time}} NOT NULL
		)`,
		// leases: who runs a singleton background job (the expiry sweep)
		// among several replicas, and until when.
		`CREATE TABLE IF NOT EXISTS leases (
			name       {{key}} PRIMARY KEY,
			holder     TEXT NOT NULL,
			expires_at {{time}} NOT NULL
		)`,
		// Partial indexes hold only the rows the sweep may still change
		// (open tokens, active credentials), so a sweep reads the few that
		// are due instead of the table, and the index shrinks as rows leave
		// those states. All three engines accept partial indexes; the
		// sweep's WHERE repeats each predicate literally so the planners
		// (SQLite's especially) use them.
		`CREATE INDEX IF NOT EXISTS enrolments_open_expiry ON enrolments (expires_at) WHERE state = 'issued'`,
		`CREATE INDEX IF NOT EXISTS credentials_active_expiry ON credentials (not_after) WHERE status = 'active'`,
	},
}, {
	// Claims only after a release (README "Revocation and ownership
	// transfer"): released_at marks a
	// device its owner (or an sp-admin) handed back; only such a device,
	// unowned and pre-enrolled, may be claimed by proof of control. A
	// device its manufacturer never handed over is not claimable by
	// whoever reads its label. A claim and a hand-over clear it.
	version: 4,
	name:    "device_released_at",
	stmts: []string{
		`ALTER TABLE devices ADD COLUMN {{if_not_exists}} released_at {{time}}`,
	},
}, {
	// The last CRL number each issuing CA published (RFC 5280 §5.2.3):
	// numbers derived from each replica's clock go backwards across
	// replicas with skewed clocks or after a clock step, and relying
	// parties keep the CRL with the highest number (RFC 5280 §5.2.3 wants
	// them monotonically increasing). One row per issuer, written once per
	// CRL generation.
	version: 5,
	name:    "crl_numbers",
	stmts: []string{
		`CREATE TABLE IF NOT EXISTS crl_numbers (
			issuer_key_id {{key}} PRIMARY KEY,
			number        {{int}} NOT NULL
		)`,
	},
}, {
	// A device's (or a credential's) audit trail, read by every device
	// page: audit_events_tenant_at made that a scan of the tenant's whole
	// trail, so a page cost grew with the tenant (the bench's complete
	// post-run check read 34,000 device pages at ~0.1 s each). Subject
	// leads: high-cardinality, so CockroachDB spreads the inserts.
	version: 6,
	name:    "audit_by_subject",
	stmts: []string{
		`CREATE INDEX IF NOT EXISTS audit_events_subject ON audit_events (subject, tenant, at)`,
	},
}, {
	// A device's open tokens, for the cancel every new token does. With
	// only enrolments_device, PostgreSQL's planner served "device_id = $1
	// AND state = 'issued'" by AND-ing it with a full scan of the partial
	// enrolments_open_expiry index: under SERIALIZABLE that scan takes a
	// predicate lock on every open token, so every two token requests
	// conflicted (SQLSTATE 40001). Both columns in one index make the
	// cancel a key lookup that locks the device's own entries only.
	version: 7,
	name:    "enrolments_device_state",
	stmts: []string{
		`CREATE INDEX IF NOT EXISTS enrolments_device_state ON enrolments (device_id, state)`,
	},
}, {
	// Bulk enrolment bundles (README "Bulk enrolment bundles"): one row per
	// committed chunk of a batch, holding the fingerprint of the rows it
	// was asked for, so a retry with the same batch ID is recognised as a
	// replay (same rows) or refused (other rows) chunk by chunk. The key
	// is a SHA-256 of the stakeholder and the client's batch ID: random,
	// so CockroachDB spreads the writes; one row per thousand devices.
	version: 8,
	name:    "bulk_bundle_chunks",
	stmts: []string{
		`CREATE TABLE IF NOT EXISTS bulk_chunks (
			batch_key   {{bytes}} NOT NULL,
			chunk       {{int}} NOT NULL,
			rows_sha256 {{bytes}} NOT NULL,
			created_at  {{time}} NOT NULL,
			PRIMARY KEY (batch_key, chunk)
		)`,
	},
}, {
	// API keys carry scopes (a key for enrolment automation cannot mint
	// keys), record who made them, and know the key that minted them, so
	// that revoking a leaked key revokes what it minted. Keys made before
	// keep every scope they had in effect ('*'); created_by is unknown
	// for them.
	version: 9,
	name:    "api_key_scopes",
	stmts: []string{
		`ALTER TABLE api_keys ADD COLUMN {{if_not_exists}} scopes TEXT NOT NULL DEFAULT '*'`,
		`ALTER TABLE api_keys ADD COLUMN {{if_not_exists}} created_by TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE api_keys ADD COLUMN {{if_not_exists}} parent_key_id TEXT`,
		`CREATE INDEX IF NOT EXISTS api_keys_parent ON api_keys (parent_key_id)`,
	},
}, {
	// The OBF CA's certificates (store/obfcerts.go), so that it publishes
	// a CRL and answers OCSP, and disabling an OBF revokes them at once.
	// Versions 7 to 9 are other changes' to take.
	version: 10,
	name:    "obf_certificates",
	stmts: []string{
		`CREATE TABLE IF NOT EXISTS obf_certificates (
			serial            TEXT PRIMARY KEY,
			issuer_key_id     TEXT NOT NULL,
			obf_id            TEXT NOT NULL,
			kind              TEXT NOT NULL,
			not_after         {{time}} NOT NULL,
			status            TEXT NOT NULL,
			revoked_at        {{time}},
			revocation_reason {{int}}
		)`,
		`CREATE INDEX IF NOT EXISTS obf_certificates_obf ON obf_certificates (obf_id)`,
		`CREATE INDEX IF NOT EXISTS obf_certificates_revoked ON obf_certificates (issuer_key_id, serial) WHERE status = 'revoked'`,
	},
	backfill: backfillOBFCertificates,
}, {
	// Proof-of-control nonces per claimant (docs/ownership.md):
	// one nonce column on the device let each claimant's request cancel
	// another's. A row per (device, claimant) nonce, keyed by the nonce's
	// hash (random, so CockroachDB spreads the writes), with the device
	// and claimant indexed for the replace-own, cap and take statements.
	// The devices table's nonce columns are no longer read or written.
	version: 11,
	name:    "claim_nonces_per_claimant",
	stmts: []string{
		`CREATE TABLE IF NOT EXISTS claim_nonces (
			nonce_hash     {{bytes}} PRIMARY KEY,
			device_id      {{key}} NOT NULL,
			stakeholder_id TEXT NOT NULL,
			expires_at     {{time}} NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS claim_nonces_device ON claim_nonces (device_id, stakeholder_id)`,
	},
}, {
	// MAF client and key registration (TS-0003 §8.8, docs/maf.md): the
	// adminFQDNs the operator gave each tenant, the clients (CSEs and
	// Enrolment Targets) a tenant registered with the MAF, and the
	// symmetric keys those clients registered. A client's secret is kept as
	// its SHA-256 only; a registered key is kept sealed by the HSM's KEK.
	// Keys are random (registration IDs, key IDs) or names the operator
	// chose, so CockroachDB spreads the writes.
	version: 12,
	name:    "maf_registrations",
	stmts: []string{
		`CREATE TABLE IF NOT EXISTS maf_admin_fqdns (
			fqdn       {{key}} PRIMARY KEY,
			tenant     TEXT NOT NULL,
			created_at {{time}} NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS maf_admin_fqdns_tenant ON maf_admin_fqdns (tenant)`,
		`CREATE TABLE IF NOT EXISTS maf_clients (
			id            {{key}} PRIMARY KEY,
			client_id     {{key}} NOT NULL,
			tenant        TEXT NOT NULL,
			admin_fqdn    TEXT NOT NULL,
			labels        TEXT NOT NULL,
			symm_key_id   {{key}} NOT NULL,
			secret_sha256 {{bytes}} NOT NULL,
			expires_at    {{time}} NOT NULL,
			created_at    {{time}} NOT NULL,
			updated_at    {{time}} NOT NULL
		)`,
		`CREATE UNIQUE INDEX IF NOT EXISTS maf_clients_client_id ON maf_clients (client_id)`,
		`CREATE UNIQUE INDEX IF NOT EXISTS maf_clients_symm_key_id ON maf_clients (symm_key_id)`,
		`CREATE INDEX IF NOT EXISTS maf_clients_tenant ON maf_clients (tenant)`,
		`CREATE TABLE IF NOT EXISTS maf_keys (
			id              {{key}} PRIMARY KEY,
			tenant          TEXT NOT NULL,
			admin_fqdn      TEXT NOT NULL,
			registration_id {{key}} NOT NULL,
			suid            {{int}} NOT NULL,
			target_ids      TEXT NOT NULL,
			labels          TEXT NOT NULL,
			sealed_key      {{bytes}} NOT NULL,
			expires_at      {{time}} NOT NULL,
			created_at      {{time}} NOT NULL,
			updated_at      {{time}} NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS maf_keys_registration ON maf_keys (registration_id)`,
	},
}, {
	// Node-IDs (store/nodeids.go, docs/onem2m.md "Certificate names"):
	// the M2M-Node-ID bound to a device, unique across the SP (every
	// tenant), so that one Node-ID certificate names one node. NULL for
	// devices without one: a unique index admits any number of NULLs on
	// all three engines. The index holds random-looking names (IMEIs,
	// UUIDs, OIDs), so CockroachDB spreads its writes.
	version: 13,
	name:    "device_node_ids",
	stmts: []string{
		`ALTER TABLE devices ADD COLUMN {{if_not_exists}} node_id {{key}}`,
		`CREATE UNIQUE INDEX IF NOT EXISTS devices_node_id ON devices (node_id)`,
	},
}, {
	// Expired proof-of-control nonces are deleted by the expiry sweep
	// (store/sweep.go), which finds them through this index instead of
	// reading every claimant's nonces each run.
	version: 14,
	name:    "claim_nonces_expiry",
	stmts: []string{
		`CREATE INDEX IF NOT EXISTS claim_nonces_expiry ON claim_nonces (expires_at)`,
	},
}, {
	// Device IDs per manufacturer (docs/ownership.md "Device IDs per manufacturer"):
	// the devices table's primary key was the manufacturer's device ID, one
	// namespace for all, so a second manufacturer uploading an ID learnt it
	// existed and could squat IDs first. device_id is now the
	// manufacturer's name for the device, unique per manufacturer; id stays
	// the registry's key (what enrolments, credentials, nonces and the
	// audit trail point at): the device ID itself for every existing row
	// and for the first upload of an ID, manufacturer_id "/" device ID for
	// another manufacturer's device of the same ID (store/devices.go).
	// Existing rows keep their keys, so nothing that points at them moves;
	// the backfill copies each key into device_id a page at a time, not in
	// one transaction over the whole table.
	version: 16,
	name:    "device_ids_per_manufacturer",
	stmts: []string{
		`ALTER TABLE devices ADD COLUMN {{if_not_exists}} device_id {{key}}`,
		`CREATE UNIQUE INDEX IF NOT EXISTS devices_manufacturer_device ON devices (manufacturer_id, device_id)`,
		`CREATE INDEX IF NOT EXISTS devices_device_id ON devices (device_id)`,
		`CREATE INDEX IF NOT EXISTS devices_tenant_device ON devices (tenant, device_id)`,
		`CREATE INDEX IF NOT EXISTS devices_tenant_state_device ON devices (tenant, state, device_id)`,
	},
	backfill: backfillDeviceIDs,
}}

// ddl runs one idempotent schema statement. Replicas that start together
// run the same statements at once, and on PostgreSQL two CREATE ... IF NOT
// EXISTS of one object race in the system catalog: the loser fails with a
// unique violation on pg_class or pg_type (or 42P07) although the object
// now exists. Run again once the winner has committed, IF NOT EXISTS
// makes the statement a no-op; an error that persists is real.
func (s *Store) ddl(ctx context.Context, stmt string) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
		}
		err = s.tx(ctx, "migrate", func(q querier) error {
			_, err := q.exec(ctx, stmt)
			return err
		})
		if err == nil || duplicateColumn(err) {
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return err
}

// duplicateColumn reports SQLite's answer to adding a column that exists,
// which a re-run of an interrupted migration meets (see {{if_not_exists}}).
func duplicateColumn(err error) bool {
	return err != nil && strings.Contains(err.Error(), "duplicate column name")
}

// SchemaVersion is the version Migrate brings the database to.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

// Pending lists the migrations the database lacks. Versions are taken out
// of order (a number kept for one change ships after a higher one), so a
// registry at SchemaVersion may still lack one: serve checks this, not the
// highest version alone.
func (s *Store) Pending(ctx context.Context) ([]int, error) {
	have, err := s.appliedVersions(ctx)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, m := range migrations {
		if !have[m.version] {
			out = append(out, m.version)
		}
	}
	return out, nil
}

// Migrate applies the migrations the database lacks and returns the ones it
// applied. It is safe to run from several replicas at once.
func (s *Store) Migrate(ctx context.Context) (applied []int, err error) {
	return s.migrate(ctx, migrations)
}

// migrate applies those of list the database lacks (tests pass a prefix
// of migrations to build a registry as an earlier release left it).
func (s *Store) migrate(ctx context.Context, list []migration) (applied []int, err error) {
	d := s.b.ddl()
	if err := s.ddl(ctx, d.sql(`CREATE TABLE IF NOT EXISTS schema_migrations (
			version    {{int}} PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_at {{time}} NOT NULL
		)`)); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	have, err := s.appliedVersions(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range list {
		if have[m.version] {
			continue
		}
		// DDL runs statement by statement: CockroachDB advises against
		// schema changes inside multi-statement transactions.
		for _, stmt := range m.stmts {
			if err := s.ddl(ctx, d.sql(stmt)); err != nil {
				return applied, fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
		}
		if m.backfill != nil {
			if err := m.backfill(ctx, s); err != nil {
				return applied, fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
		}
		if err := s.tx(ctx, "migrate", func(q querier) error {
			_, err := q.exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)
				ON CONFLICT (version) DO NOTHING`, m.version, m.name, time.Now().UTC())
			return err
		}); err != nil {
			return applied, fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
		}
		applied = append(applied, m.version)
	}
	return applied, nil
}

// Version is the highest applied migration (0 for an empty database).
func (s *Store) Version(ctx context.Context) (int, error) {
	have, err := s.appliedVersions(ctx)
	if err != nil {
		return 0, err
	}
	v := 0
	for k := range have {
		v = max(v, k)
	}
	return v, nil
}

func (s *Store) appliedVersions(ctx context.Context) (map[int]bool, error) {
	have := map[int]bool{}
	err := s.read(ctx, func(q querier) error {
		return queryEach(ctx, q, `SELECT version FROM schema_migrations`, nil, func(r rows) error {
			var v int
			err := r.Scan(&v)
			have[v] = true
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read schema version: %w", err)
	}
	return have, nil
}
