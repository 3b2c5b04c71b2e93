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
			_, created, err := ceremony(cmd, g, "add-node-ca", pki.AddNodeCA)
			if err == nil && len(created) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "nothing to do: the node CA is already there")
			}
			return err
		},
	}
}
