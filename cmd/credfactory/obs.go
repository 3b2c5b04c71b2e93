package main

import (
	"errors"
	"fmt"
	"os/signal"
	"syscall"

	"github.com/credfactory/credfactory/obs"
	"github.com/spf13/cobra"
)

const obsConfigHelp = `Config (YAML, strict: an unknown key is an error; relative paths are
relative to the file's directory):

  sp_url: https://sp.example:8443     # the SP's base URL
  trust_anchor: trust-anchor.pem      # the SP root (PEM)
  client_cert: obs-client.pem         # PEM chain the portal issued (clientCert)
  client_key: pkcs11:object=credfactory-obs-client;type=private
  hsm:                                # the OBS's own token, not the SP's
    embedded: true                    # a SoftHSM2 token under dir, made by init-keys,
    dir: hsm                          # its PIN in <dir>/hsm-pin (0600)
    token_label: credfactory-obs
    # a real HSM instead: embedded: false, module: /path/to/pkcs11.so,
    # token_label (or token_serial), pin_file; also max_sessions, wait_timeout.
    # The PIN: env CREDFACTORY_HSM_PIN, else pin_file; never a flag.
  spool: spool                        # in/ out/ outbox/ refused/
  batch_size: 100                     # items per forward request, at most 1000
  flush_interval: 2s                  # how often run polls in/ and sends
  retry_timeout: 1m                   # give up a send after this long without progress
  key_lifetime: 0s                    # shared keys; 0: the SP's mef.key_lifetime,
                                      # which also bounds it
  log: {level: info, format: json}
`

func newOBS() *cobra.Command {
	var cfgPath string
	load := func() (obs.Config, error) { return obs.Load(cfgPath) }
	cmd := &cobra.Command{
		Use:   "obs",
		Short: "Play a trusted On-Boarding Server on a factory line (same as obs run)",
		Long: `obs provisions devices on a factory line as a trusted OBS, a registration
authority for the SP: it forwards each device's CSR, or a shared key it
generates, with the device's enrolment token to the SP in batches over mTLS.
The SP's CA certifies the CSR for the token's assigned ID and the SP names the
key; the answer is what the line loads into the device.

First run "obs init-keys": it makes the OBS's mTLS key in its HSM and writes its
CSR for an sp-admin to register the OBS in the portal (kind obs, trusted,
clientCsr). Save the returned clientCert as client_cert, and the SP's
trust-anchor.pem as trust_anchor.

Then "obs run": the line drops jobs into <spool>/in/ (write them under a name
starting with "." and rename them to *.json):
  {"bundle": <the portal's bundle for this OBS>, "csr": "<device CSR, PEM>"}
  {"bundle": <...>, "key": {"suid": 22, "targetIds": ["..."]}}
Each job's forward item goes to <spool>/outbox/ before anything is sent; when
the SP has recorded it, its answer goes to <spool>/out/<assigned ID>.json (0600)
for the line to load into the device, and only then does the item leave the
outbox. A refused item goes to <spool>/refused/ with the SP's code and message.

` + obsConfigHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOBS(cmd, load, false)
		},
	}
	cmd.PersistentFlags().StringVar(&cfgPath, "config", "", "OBS config file (YAML)")

	var outDir string
	initKeys := &cobra.Command{
		Use:   "init-keys",
		Short: "Make the OBS's mTLS key in its HSM and write its CSR",
		Long: `init-keys creates the embedded SoftHSM2 token (hsm.embedded; the PIN goes to a
0600 file in hsm.dir), generates the client_key in the HSM if it is missing
(ECDSA P-256, non-extractable), and writes ` + obs.ClientCSRFile + ` into --out
(default: the config file's directory). Running it again keeps the key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := load()
			if err != nil {
				return err
			}
			if outDir == "" {
				outDir = cfg.Dir
			}
			res, err := obs.InitKeys(cmd.Context(), cfg, outDir)
			out := cmd.OutOrStdout()
			if res.TokenCreated {
				fmt.Fprintln(out, "created SoftHSM2 token", cfg.HSM.TokenLabel, "in", cfg.HSM.Dir)
			}
			for _, k := range res.KeysCreated {
				fmt.Fprintln(out, "created HSM key", k)
			}
			if err != nil {
				return fmt.Errorf("obs init-keys: %w", err)
			}
			fmt.Fprintln(out, "client CSR:", res.ClientCSR)
			return nil
		},
	}
	initKeys.Flags().StringVar(&outDir, "out", "", "directory for the CSR (default: the config file's directory)")

	var once bool
	run := &cobra.Command{
		Use:   "run",
		Short: "Provision the jobs in the spool and forward them to the SP",
		Long: `run first sends what is left in the outbox, then provisions the jobs in
<spool>/in/ and forwards them, polling every flush_interval until SIGTERM or
SIGINT. With --once it does one round and exits: non-zero if anything was
refused (by the SP or by the OBS) or could not be sent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOBS(cmd, load, once)
		},
	}
	run.Flags().BoolVar(&once, "once", false, "process in/, drain the outbox, then exit")
	cmd.AddCommand(initKeys, run)
	return cmd
}

func runOBS(cmd *cobra.Command, load func() (obs.Config, error), once bool) error {
	cfg, err := load()
	if err != nil {
		return err
	}
	log := cfg.Log.Logger(cmd.ErrOrStderr())
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := cfg.CheckRun(); err != nil {
		return err
	}
	mod, keys, err := obs.OpenHSM(ctx, cfg)
	if err != nil {
		return err
	}
	defer mod.Close()
	o, err := obs.New(cfg, keys, log)
	if err != nil {
		return err
	}
	if !once {
		log.Info("OBS running", "sp_url", cfg.SPURL, "spool", cfg.Spool, "version", versionString())
	}
	sum, err := o.Run(ctx, once)
	if once {
		fmt.Fprintln(cmd.OutOrStdout(), sum.String())
	}
	if errors.Is(err, obs.ErrIncomplete) {
		return fmt.Errorf("%w (%s); see %s", err, sum, cfg.Spool)
	}
	return err
}
