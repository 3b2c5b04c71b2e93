package main

import (
	"context"
	"fmt"

	"github.com/credfactory/credfactory/config"
	"github.com/credfactory/credfactory/store"
	"github.com/spf13/cobra"
)

func openStore(ctx context.Context, cfg config.Config, obs store.Observer) (*store.Store, error) {
	st, err := store.Open(ctx, cfg.Store.URL, store.Options{
		MaxConns: cfg.Store.MaxConns, MaxRetries: cfg.Store.MaxRetries, TxTimeout: cfg.Store.TxTimeout, Observer: obs,
		RetryBackoff: cfg.Store.RetryBackoff, RetryBackoffMax: cfg.Store.RetryBackoffMax,
	})
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	return st, nil
}

// checkSchema refuses a registry whose schema is not the one this binary
// was built for. Newer is the case a rolling upgrade meets: a replica of the
// previous release behind the same load balancer must stop, not misread
// tables a newer release changed.
func checkSchema(ctx context.Context, st *store.Store) error {
	v, err := st.Version(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("registry schema version: %w", err)
	case v > store.SchemaVersion():
		return fmt.Errorf("registry schema is version %d, newer than this binary's %d: a newer credfactory migrated it; run that release (this one would misread the registry)",
			v, store.SchemaVersion())
	case v < store.SchemaVersion():
		return fmt.Errorf("registry schema is version %d, this binary needs %d: run credfactory migrate", v, store.SchemaVersion())
	}
	// Migrations ship out of order: the highest may be there without one
	// below it.
	if pending, err := st.Pending(ctx); err != nil {
		return fmt.Errorf("registry schema version: %w", err)
	} else if len(pending) > 0 {
		return fmt.Errorf("registry schema lacks migrations %v: run credfactory migrate", pending)
	}
	return nil
}

// migrate brings the schema up to date and says what it did.
func migrate(ctx context.Context, st *store.Store) (string, error) {
	applied, err := st.Migrate(ctx)
	if err != nil {
		return "", err
	}
	if len(applied) == 0 {
		return fmt.Sprintf("registry schema is current (version %d, %s)", store.SchemaVersion(), st.Backend()), nil
	}
	return fmt.Sprintf("registry schema migrated to version %d (%s): applied %v", store.SchemaVersion(), st.Backend(), applied), nil
}

func newMigrate(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the registry's schema migrations (serve does it at start unless store.migrate is off)",
		Long: `migrate brings the registry database named by store.url up to the schema this
binary needs. It is safe to run while other replicas serve, and again: an
up-to-date schema is left alone.

` + config.Help(),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			st, err := openStore(cmd.Context(), cfg, nil)
			if err != nil {
				return err
			}
			defer st.Close()
			msg, err := migrate(cmd.Context(), st)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
}
