package main

import (
	"fmt"

	"github.com/credfactory/credfactory/pki"
	"github.com/spf13/cobra"
)

// newAddNodeCA is the ceremony that gives an installation made before
// Node-ID certificates its node CA (docs/onem2m.md "Certificate names").
func newAddNodeCA(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "add-node-ca",
		Short: "Add the node CA (Node-ID certificates) to an installation made before it",
		Long: `add-node-ca generates the node CA key (ca.node_key) in the HSM, has the root
certify it and writes <data-dir>/` + pki.NodeCertFile + `; every root signature goes on the
audit trail (log.audit_file). The node CA signs Node-ID certificates (TS-0003
§10.1.1.8), which the issuing CA's URI name constraint cannot cover. init does
the same for a new installation; serve never does. Restart serve afterwards.
Running it again changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			audit, closeAudit, err := cfg.Log.AuditLogger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer closeAudit.Close()
			created, err := pki.AddNodeCA(cmd.Context(), cfg, pki.WithAudit(audit))
			out := cmd.OutOrStdout()
			for _, c := range created {
				fmt.Fprintln(out, "created", c)
			}
			if err != nil {
				return fmt.Errorf("add-node-ca: %w", err)
			}
			if len(created) == 0 {
				fmt.Fprintln(out, "nothing to do: the node CA is already there")
			}
			return nil
		},
	}
}
