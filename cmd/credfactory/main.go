package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/castatus"
	"github.com/credfactory/credfactory/clientauth"
	"github.com/credfactory/credfactory/config"
	"github.com/credfactory/credfactory/maf"
	"github.com/credfactory/credfactory/mef"
	"github.com/credfactory/credfactory/metrics"
	"github.com/credfactory/credfactory/pki"
	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/server"
	"github.com/credfactory/credfactory/store"
	"github.com/credfactory/credfactory/tlsticket"
	"github.com/spf13/cobra"
	"github.com/valyala/fasthttp"
)

// version is set at link time (-ldflags "-X main.version=..."); otherwise
// the VCS revision Go stamped into the binary is reported.
var version = ""

func main() {
	if err := newRoot(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "credfactory:", err)
		os.Exit(1)
	}
}

type globals struct {
	dataDir    string
	configFile string
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "credfactory",
		Short:         "HSM-backed credential factory for oneM2M device enrolment",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.dataDir, "data-dir", envOr("CREDFACTORY_DATA_DIR", "./var"),
		"data directory: embedded HSM token, CA certificates, trust-anchor.pem (env CREDFACTORY_DATA_DIR)")
	root.PersistentFlags().StringVar(&g.configFile, "config", "",
		"config file (YAML); default <data-dir>/"+config.DefaultFile+" if it exists")
	root.AddCommand(newInit(g), newServe(g), newMigrate(g), newAdmin(g), newEnroll(), newOBS(), newBench(), newVersion())
	return root
}

func (g *globals) load() (config.Config, error) {
	return config.Load(g.dataDir, g.configFile)
}

func newInit(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "init",
		Short: "Create the HSM token and keys, the CA hierarchy, the server certificate and trust-anchor.pem",
		Long: `init runs the key ceremony into the data directory. On the embedded default it
creates a SoftHSM2 token under <data-dir>/hsm with a random PIN in a 0600 file,
generates the root and issuing CA keys, the TLS key, the KDF master key and the
key-encryption key inside the HSM (non-extractable), certifies the issuing CA
with the root, issues the server's TLS certificate and writes
<data-dir>/trust-anchor.pem. Running it again changes nothing and says so.

` + config.Help(),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, created, err := ceremony(cmd, g, "init", pki.Init)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(created) == 0 {
				fmt.Fprintln(out, "nothing to do: everything in", cfg.DataDir, "is already initialised")
			}
			fmt.Fprintln(out, "trust anchor:", cfg.TrustAnchorPath())
			return nil
		},
	}
}

// ceremony runs a key ceremony step (init, add-node-ca) with every root
// signature on the audit trail (log.audit_file) and prints what it created,
// also when it failed part way.
func ceremony(cmd *cobra.Command, g *globals, name string, step func(context.Context, config.Config, ...pki.Option) ([]string, error)) (config.Config, []string, error) {
	cfg, err := g.load()
	if err != nil {
		return cfg, nil, err
	}
	audit, closeAudit, err := cfg.Log.AuditLogger(cmd.ErrOrStderr())
	if err != nil {
		return cfg, nil, err
	}
	defer closeAudit.Close()
	created, err := step(cmd.Context(), cfg, pki.WithAudit(audit))
	for _, c := range created {
		fmt.Fprintln(cmd.OutOrStdout(), "created", c)
	}
	if err != nil {
		return cfg, created, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, created, nil
}

func newServe(g *globals) *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the factory over HTTPS",
		Long: `serve opens the HSM, loads the CA and serves HTTPS on server.listen with the
TLS key in the HSM. /healthz says the process is up, /readyz that the HSM
answers; /metrics, for Prometheus, is on the plain-HTTP operations listener
(server.ops_listen, 127.0.0.1:9090 by default), never the TLS one. SIGTERM or SIGINT stops accepting
connections and lets in-flight requests finish (server.shutdown_timeout).

` + config.Help(),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listen != "" {
				// As the env override, so values derived from the address
				// (portal.mef_uri) follow it.
				os.Setenv("CREDFACTORY_SERVER_LISTEN", listen)
			}
			cfg, err := g.load()
			if err != nil {
				return err
			}
			return serve(cmd.Context(), cfg, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "address to serve on (overrides server.listen)")
	return cmd
}

func serve(ctx context.Context, cfg config.Config, stderr io.Writer) error {
	log := cfg.Log.Logger(stderr)
	tuneGC(cfg.Server, log)
	reg := metrics.New()
	audit, closeAudit, err := cfg.Log.AuditLogger(stderr)
	if err != nil {
		return err
	}
	defer closeAudit.Close()
	p, err := pki.Open(ctx, cfg, reg.HSMObserver(), pki.WithAudit(audit))
	if err != nil {
		return fmt.Errorf("open key material: %w", err)
	}
	defer p.Close()
	reg.WatchHSMPool(p.HSM.Stats)
	reg.SetCertificateExpiry("root", p.Root.NotAfter)
	reg.SetCertificateExpiry("issuing", p.Issuing.NotAfter)
	reg.SetCertificateExpiry("obf", p.OBFCA.Issuer().NotAfter)
	if p.NodeCA != nil {
		reg.SetCertificateExpiry("node", p.NodeCA.Issuer().NotAfter)
	} else {
		log.Warn("no node CA: Node-ID certificates are refused (node_ca_missing) until credfactory admin add-node-ca adds it", "err", p.NodeCAErr.Error())
	}
	reg.SetCertificateExpiry("server", p.TLS().Leaf.NotAfter)

	st, err := openStore(ctx, cfg, reg.StoreObserver())
	if err != nil {
		return err
	}
	defer st.Close()
	if cfg.Store.Migrate {
		msg, err := migrate(ctx, st)
		if err != nil {
			return err
		}
		log.Info(msg)
	}
	if err := checkSchema(ctx, st); err != nil {
		return err
	}
	batcher := st.NewBatcher(store.BatchOptions{MaxItems: cfg.Store.BatchMax, Window: cfg.Store.BatchWindow, Workers: cfg.Store.BatchWorkers})
	defer batcher.Close()
	registry := maf.New(st, batcher, p.KDF, p.KEK)
	// Device certificates: the issuing CA's, and the node CA's Node-ID
	// certificates (which renew and reach the MAF like the others).
	deviceCAs := []*x509.Certificate{p.Issuing}
	if p.NodeCA != nil {
		deviceCAs = append(deviceCAs, p.NodeCA.Issuer())
	}
	verifier := clientauth.New([]*x509.Certificate{p.Root}, deviceCAs)
	// OBFs' client certificates: the OBF CA's, or the issuing CA's for
	// OBFs registered before the OBF CA certified them.
	obfVerifier := clientauth.New([]*x509.Certificate{p.Root}, []*x509.Certificate{p.OBFCA.Issuer(), p.Issuing})

	// Rate limits (README "Rate limits"), per replica; the MEF, the portal
	// and the status routes apply them.
	limits, err := cfg.Limits.Build(reg.RateLimitObserver(), nil)
	if err != nil {
		return err
	}
	// OCSP may use a quarter of the HSM sessions at most: an unauthenticated
	// flood must leave enrolment the rest.
	status, err := castatus.New(p.CA, st, castatus.Config{Interval: cfg.CA.CRLInterval, Validity: cfg.CA.CRLValidity,
		Limits: &limits, Signers: max(1, cfg.HSM.MaxSessions/4), Observer: reg.CAStatusObserver(), Logger: log})
	if err != nil {
		return err
	}
	// The node CA's CRL and OCSP: its certificates are rows of the same
	// registry, told apart by issuer_key_id (store/revoked.go), so each
	// CA's CRL lists its own certificates only.
	var nodeStatus *castatus.Service
	if p.NodeCA != nil {
		if nodeStatus, err = castatus.New(p.NodeCA, st, castatus.Config{Name: ca.NodeCRLName, Interval: cfg.CA.CRLInterval,
			Validity: cfg.CA.CRLValidity, Limits: &limits, Signers: 1, Observer: reg.CAStatusObserver(), Logger: log}); err != nil {
			return fmt.Errorf("node CA status: %w", err)
		}
	}
	// A revocation through this process regenerates the CRLs at their
	// next fetch; other replicas notice through the registry's watermark.
	markStale := func() {
		status.MarkStale()
		if nodeStatus != nil {
			nodeStatus.MarkStale()
		}
	}
	registry.OnRevoke(markStale)
	// The OBF CA's CRL and OCSP: disabled OBFs' client certificates and
	// the retired sub-CAs (store.OBFCertificates).
	obfStatus, err := castatus.New(p.OBFCA, st.OBFCertificates(), castatus.Config{Name: ca.OBFCRLName,
		Interval: cfg.CA.CRLInterval, Validity: cfg.CA.CRLValidity, Limits: &limits, Signers: 1,
		Observer: reg.CAStatusObserver(), Logger: log})
	if err != nil {
		return fmt.Errorf("OBF CA status: %w", err)
	}

	tlsConf := server.TLSConfig(p.GetCertificate)
	if tlsConf.CurvePreferences, err = cfg.Server.CurvePreferences(); err != nil {
		return err
	}
	// Session tickets any replica can open: keys derived in the HSM
	// (package tlsticket) instead of Go's random ones per process.
	if err := tlsticket.Set(ctx, tlsConf, p.KDF, time.Now()); err != nil {
		return err
	}
	srv := server.New(server.Options{
		Listen:       cfg.Server.Listen,
		StatusListen: cfg.CA.StatusListen,
		OpsListen:    cfg.Server.OpsListen,
		Pprof:        cfg.Server.Pprof,
		TLS:          tlsConf,
		ReadTimeout:  cfg.Server.ReadTimeout,
		WriteTimeout: cfg.Server.WriteTimeout,
		IdleTimeout:  cfg.Server.IdleTimeout,
		MaxBodyBytes: cfg.Server.MaxBodyBytes,
		MaxConns:     cfg.Server.MaxConns,
		Logger:       log,
		Metrics:      reg,
		Checks:       map[string]server.Check{"hsm": p.HSM.Ping, "keys": p.KeysPresent, "store": st.Ping},
		AccessLog:    cfg.Log.Access,
	})
	var published []castatus.Published
	if p.RootCRL != nil {
		published = append(published, castatus.Published{Name: ca.RootCRLName, DER: p.RootCRL.DER,
			ThisUpdate: p.RootCRL.ThisUpdate, NextUpdate: p.RootCRL.NextUpdate})
		reg.SetCertificateExpiry("root_crl", p.RootCRL.NextUpdate)
	} else {
		// Chains still verify with -crl_check; only relying parties that
		// check every level (-crl_check_all) need the root's.
		log.Warn("no root CRL to publish", "err", p.RootCRLErr.Error())
	}
	services := []*castatus.Service{status, obfStatus}
	if nodeStatus != nil {
		services = append(services, nodeStatus)
	}
	srv.RegisterStatus(castatus.Routes(published, services...)...)
	mafAPI := maf.NewAPI(registry, verifier, cfg.MAF.AdminClients)
	if p.NodeCA != nil {
		// A Node-ID is the device owner's choice, not a name the SP
		// assigned: such a caller is known by its assigned ID only.
		mafAPI.OwnerNamedCAs(p.NodeCA.Issuer())
	}
	keyPolicy, err := ca.NewKeyPolicy(cfg.MEF.KeyAlgorithms)
	if err != nil {
		return fmt.Errorf("mef.key_algorithms: %w", err)
	}
	enrol := mef.New(mef.Config{FQDN: cfg.MEF.FQDN, MAFFQDN: cfg.MEF.MAFFQDN, SPDomain: cfg.Portal.SPDomain, KeyPolicy: keyPolicy,
		KeyLifetime: cfg.MEF.KeyLifetime, KeyMode: cfg.MEF.KeyMode, CertValidity: cfg.MEF.CertValidity, MaxForward: cfg.MEF.MaxForward, Limits: limits,
		RenewBefore: cfg.MEF.RenewBefore, RenewAfter: cfg.MEF.RenewAfter, OnRevoke: markStale, ESTAnswerChain: cfg.MEF.ESTAnswerChain, NodeCA: p.NodeCA},
		st, registry, p.CA, p.Root, p.OBFCA.Issuer(), p.KDF, verifier, reg.MEFObserver())
	srv.Register(enrol.Routes()...)
	pt := portal.New(portal.Config{Observer: reg.PortalObserver(),
		MEFURI: cfg.Portal.MEFURI, TrustAnchor: p.Root, SPDomain: cfg.Portal.SPDomain,
		TokenTTL: cfg.Portal.TokenTTL, SessionTTL: cfg.Portal.SessionTTL, Limits: limits, OnRevoke: markStale,
		OnOBFRevoke: obfStatus.MarkStale, MaxConcurrentUploads: cfg.Portal.MaxUploads,
	}, st, p.KDF, p.CA, p.OBFCA, obfVerifier)
	// MAF client registration is a stakeholder's act, authenticated as the
	// portal authenticates (API key with the maf scope, or session).
	mafAPI.EnableRegistration(maf.Registrations{MAFFQDN: cfg.MEF.MAFFQDN, Stakeholders: func(ctx *fasthttp.RequestCtx) (maf.Stakeholder, error) {
		who, err := pt.Authenticate(ctx, false)
		if err != nil {
			return maf.Stakeholder{}, err
		}
		if err := portal.RequireScope(who, portal.ScopeMAF); err != nil {
			return maf.Stakeholder{}, err
		}
		return maf.Stakeholder{Tenant: who.Stakeholder.Tenant(), SPAdmin: who.Stakeholder.Role == store.RoleSPAdmin, Actor: who.Stakeholder.Name}, nil
	}})
	srv.Register(mafAPI.Routes()...)
	srv.Register(pt.APIRoutes()...)
	srv.Register(pt.PageRoutes()...)
	if err := srv.Listen(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go p.KeepServerCertFresh(ctx, func(renewed *tls.Certificate, err error) {
		if err != nil {
			log.Error("renew the server certificate", "err", err.Error())
			return
		}
		reg.SetCertificateExpiry("server", renewed.Leaf.NotAfter)
		log.Info("renewed the server certificate", "not_after", renewed.Leaf.NotAfter)
	})
	go tlsticket.Keep(ctx, tlsConf, p.KDF, func(err error) {
		log.Error("rotate the TLS session ticket keys (the previous keys stay)", "err", err.Error())
	})
	go status.Run(ctx)
	go obfStatus.Run(ctx)
	if nodeStatus != nil {
		go nodeStatus.Run(ctx)
	}
	if a := srv.StatusAddr(); a != nil {
		log.Info("serving CRL and OCSP over plain HTTP", "addr", "http://"+a.String(), "status_url", cfg.CA.StatusURL)
	} else {
		// RFC 5280 §4.2.1.13 / RFC 6960 relying parties fetch CRLs and OCSP
		// over http; many refuse https for them (no chain to validate it
		// with yet), so certificates naming an https status URL may never
		// be checked.
		log.Warn("ca.status_listen is empty: CRL and OCSP are served only over HTTPS, which many relying parties will not fetch",
			"status_url", cfg.CA.StatusURL)
	}
	if a := srv.OpsAddr(); a != nil {
		log.Info("serving /metrics, /healthz and /readyz over plain HTTP", "addr", "http://"+a.String(), "pprof", cfg.Server.Pprof)
	} else {
		log.Warn("server.ops_listen is empty: no /metrics for Prometheus")
	}
	stopSweeper := startSweeper(ctx, cfg, st, reg, log)
	defer stopSweeper()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	log.Info("serving", "addr", "https://"+srv.Addr().String(), "trust_anchor", cfg.TrustAnchorPath(), "version", versionString())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", cfg.Server.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "credfactory", versionString())
		},
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return info.Main.Version
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// tuneGC applies server.gc_percent, server.procs and
// server.memory_limit_mib unless the operator set Go's own GOGC,
// GOMAXPROCS or GOMEMLIMIT, which keep the last word.
func tuneGC(s config.Server, log *slog.Logger) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(s.GCPercent)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// Threads in a PKCS#11 or SQLite call (a signature, an fsync)
		// hold their P until the scheduler notices; with one P per CPU the
		// group commit's writer then queued behind the handlers for a P,
		// and the CPUs idled. Twice as many Ps as CPUs: +16 % EST
		// throughput at 64 clients, 8 % less CPU per certificate
		// (bench/README.md "Threads").
		n := s.Procs
		if n == 0 {
			n = 2 * runtime.GOMAXPROCS(0)
		}
		runtime.GOMAXPROCS(n)
	}
	if os.Getenv("GOMEMLIMIT") == "" && s.MemoryLimitMiB > 0 {
		debug.SetMemoryLimit(int64(s.MemoryLimitMiB) << 20)
	}
	log.Debug("garbage collector", "memory_limit_bytes", debug.SetMemoryLimit(-1))
}
