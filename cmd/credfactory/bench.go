package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/credfactory/credfactory/bench"
	"github.com/credfactory/credfactory/ca"
	"github.com/credfactory/credfactory/client"
	"github.com/credfactory/credfactory/config"
	"github.com/credfactory/credfactory/pki"
	"github.com/credfactory/credfactory/store"
	"github.com/spf13/cobra"
)

func newBench() *cobra.Command {
	var server, opsURL, anchorPath, owner, spDomain, storeURL, paths, conc, batches, jsonOut, plotOut string
	var duration time.Duration
	var tokens, factory int
	var ceilings bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure enrolments per second per path against a server (one it starts, or --server)",
		Long: `bench drives the enrolment paths the way devices and factory lines do and
reports enrolments/s, p50/p90/p99/max latency, errors by code and the server's
HSM operations/s and commits/s per path and concurrency. Setup is not timed.

Without --server it initialises a fresh data directory, starts credfactory
serve on loopback (with --store-url, on that database) and creates its own
accounts. With --server it needs CREDFACTORY_BENCH_MANUFACTURER_KEY and
CREDFACTORY_BENCH_ADMIN_KEY (API keys), --owner (the manufacturer's name) and
--anchor (the trust anchor). --ceilings first measures the raw ceilings
through the server's own code (HSM sign, HSM-signed issuance, HMAC, ECDSA
verify, store commits) and reports each path as a ratio of its ceiling.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, out := cmd.Context(), cmd.OutOrStdout()
			cfg := bench.Config{Paths: splitList(paths), Concurrency: ints(conc), BatchSizes: ints(batches), Duration: duration, Tokens: tokens}
			var report benchReport
			var t bench.Target
			var stop func() int64
			if server == "" {
				dir, err := os.MkdirTemp("", "credfactory-bench-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				if t, stop, report.Ceilings, err = localBenchTarget(ctx, out, dir, storeURL, ceilings); err != nil {
					return err
				}
			} else {
				var err error
				if t, err = remoteBenchTarget(server, anchorPath, owner, spDomain); err != nil {
					return err
				}
			}
			if server == "" {
				opsURL = t.Ops
			}
			if opsURL != "" {
				t.Metrics = bench.MetricsFrom(opsURL)
			}
			if factory == 0 {
				fmt.Fprintf(out, "bench against %s: paths %v, concurrency %v, %v per step\n", t.Base, cfg.Paths, cfg.Concurrency, cfg.Duration)
			}
			runner := bench.NewRunner(t, out)
			runner.Progress = isTerminal(out) // a live bar per step
			if factory > 0 {
				return runFactory(ctx, runner, factory, &report, stop, out)
			}
			results, err := runner.Run(ctx, cfg)
			report.Results = results
			if err == nil {
				err = runner.Verify(ctx, results)
			}
			if stop != nil {
				report.ServerRSSMiB = float64(stop()) / 1024
			}
			if err != nil {
				return err
			}
			if err := report.write(jsonOut, plotOut); err != nil {
				return err
			}
			report.print(out)
			return nil
		},
	}
	cmd.Flags().StringVar(&server, "server", "", "base URL of a running server (default: start one)")
	cmd.Flags().StringVar(&anchorPath, "anchor", "", "with --server: its trust anchor (PEM)")
	cmd.Flags().StringVar(&opsURL, "ops", "", "with --server: its operations listener's URL (server.ops_listen, e.g. http://127.0.0.1:9090) for HSM operations/s and commits/s")
	cmd.Flags().StringVar(&owner, "owner", "", "with --server: the manufacturer's account name (owns the bench's OBS)")
	cmd.Flags().StringVar(&spDomain, "sp-domain", "", "with --server: its portal.sp_domain (the host of device URIs)")
	cmd.Flags().StringVar(&storeURL, "store-url", "", "without --server: the started server's store.url (default its SQLite file)")
	cmd.Flags().StringVar(&paths, "paths", "est,psk,forward,forward-key,est-newconn,est-resume", "paths to drive: est, psk (exporter mode, a TLS connection per key), psk-master (master mode, keep-alive), forward (CSRs), forward-key (shared keys), est-newconn (a new TLS connection per enrolment), est-resume (the same, resuming a TLS session), token (enrolment bundles, one per request)")
	cmd.Flags().StringVar(&conc, "concurrency", "1,8,64", "concurrent clients per step")
	cmd.Flags().StringVar(&batches, "batches", "1,10,100,1000", "forward batch sizes")
	cmd.Flags().DurationVar(&duration, "duration", 5*time.Second, "length of each step")
	cmd.Flags().IntVar(&tokens, "tokens", 3000, "enrolments prepared per step (a step ends when they run out)")
	cmd.Flags().StringVar(&jsonOut, "json", "", "also write the report as JSON to this file")
	cmd.Flags().StringVar(&plotOut, "plot", "", "also draw throughput and p99 against concurrency as SVG to this file")
	cmd.Flags().BoolVar(&ceilings, "ceilings", false, "measure the raw ceilings first and report ratios")
	cmd.Flags().IntVar(&factory, "factory", 0, "instead of the paths: a factory line of N devices end to end (CSV upload, bulk bundles, EST with 64 clients, registry verification)")
	return cmd
}

// localBenchTarget measures the ceilings first when asked (on a server of
// their own), then starts the server the bench drives, in dir.
func localBenchTarget(ctx context.Context, out io.Writer, dir, storeURL string, ceilings bool) (bench.Target, func() int64, map[string]float64, error) {
	var ceil map[string]float64
	if ceilings {
		fmt.Fprintln(out, "measuring ceilings...")
		var err error
		if ceil, err = measureCeilings(ctx, dir, storeURL); err != nil {
			return bench.Target{}, nil, nil, fmt.Errorf("ceilings: %w", err)
		}
	}
	t, stop, err := startBenchServer(ctx, dir, storeURL, out)
	return t, stop, ceil, err
}

// remoteBenchTarget describes a running server: its API keys come from the
// environment, never a flag.
func remoteBenchTarget(server, anchorPath, owner, spDomain string) (bench.Target, error) {
	raw, err := os.ReadFile(anchorPath)
	if err != nil {
		return bench.Target{}, fmt.Errorf("--anchor: %w", err)
	}
	anchor, err := ca.ParseCertsPEM(raw)
	if err != nil {
		return bench.Target{}, fmt.Errorf("--anchor: %w", err)
	}
	return bench.Target{Base: server, Anchor: anchor, ManufacturerKey: os.Getenv("CREDFACTORY_BENCH_MANUFACTURER_KEY"),
		AdminKey: os.Getenv("CREDFACTORY_BENCH_ADMIN_KEY"), OwnerName: owner, SPDomain: spDomain}, nil
}

// isTerminal reports whether w is a terminal, where a progress bar that
// redraws itself is readable (in a file or a pipe it is noise).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// write saves the report as JSON and its plot as SVG, each where a path is
// given.
func (r benchReport) write(jsonOut, plotOut string) error {
	if jsonOut != "" {
		raw, _ := json.MarshalIndent(r, "", "  ") // plain structs and maps: cannot fail
		if err := os.WriteFile(jsonOut, raw, 0o644); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	if plotOut == "" {
		return nil
	}
	f, err := os.Create(plotOut)
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	if err := bench.Plot(r.Results, f); err != nil {
		f.Close()
		return fmt.Errorf("--plot: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	return nil
}

type benchReport struct {
	Ceilings     map[string]float64 `json:"ceilings,omitempty"`
	Results      []bench.Result     `json:"results"`
	ServerRSSMiB float64            `json:"serverRssMiB,omitempty"`
}

// ceilingOf names the ceiling each path is judged against (issue targets).
// Exporter-mode shared keys (psk) have none here: a TLS handshake per key
// bounds them, not the HSM's HMAC (bench/README.md "Shared keys").
var ceilingOf = map[string]string{
	bench.PathEST: "issuance_hsm", bench.PathESTNewConn: "issuance_hsm", bench.PathESTResume: "issuance_hsm", bench.PathPSKMaster: "hmac_hsm", bench.PathForward: "issuance_hsm",
	bench.PathForwardKey: "seal_hsm",
}

func (r benchReport) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tclients\tbatch\tenrolments/s\tp50\tp90\tp99\tmax\terrors\tHSM ops/s\tcommits/s\tCPU/enrolment\tof ceiling\t")
	for _, x := range r.Results {
		ratio := ""
		if c := r.Ceilings[ceilingOf[x.Path]]; c > 0 {
			ratio = fmt.Sprintf("%.2f", x.PerSecond/c)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%v\t%v\t%v\t%v\t%d\t%.0f\t%.0f\t%v\t%s\t\n", x.Path, x.Concurrency, x.BatchSize, x.PerSecond,
			x.P50.Round(10*time.Microsecond), x.P90.Round(10*time.Microsecond), x.P99.Round(10*time.Microsecond),
			x.Max.Round(10*time.Microsecond), x.ErrorCount(), x.HSMOpsPerSec, x.CommitsPerSec, x.ServerCPUPerEnrolment.Round(time.Microsecond), ratio)
	}
	tw.Flush()
	for k, v := range r.Ceilings {
		fmt.Fprintf(w, "ceiling %-14s %8.0f/s\n", k, v)
	}
	if r.ServerRSSMiB > 0 {
		fmt.Fprintf(w, "server RSS at the end: %.0f MiB\n", r.ServerRSSMiB)
	}
}

// benchSPDomain is the SP domain of a server the bench starts itself.
const benchSPDomain = "bench.sp.example"

// startBenchServer initialises dir, creates the bench's accounts and starts
// credfactory serve on a free loopback port; stop ends it and returns its
// peak-ish RSS (VmHWM, KiB).
func startBenchServer(ctx context.Context, dir, storeURL string, out io.Writer) (bench.Target, func() int64, error) {
	self, err := os.Executable()
	if err != nil {
		return bench.Target{}, nil, err
	}
	// The SP domain is fixed at init: the issuing CA's URI name
	// constraints confine device URIs to it (TS-0003 §10.1.1.5).
	env := append(os.Environ(), "CREDFACTORY_PORTAL_SP_DOMAIN="+benchSPDomain)
	if storeURL != "" {
		env = append(env, "CREDFACTORY_STORE_URL="+storeURL)
	}
	run := func(stdin string, args ...string) (string, error) {
		c := exec.CommandContext(ctx, self, append(args, "--data-dir", dir)...)
		c.Env, c.Stdin = append(env, "CREDFACTORY_PASSWORD=bench-password-not-secret"), strings.NewReader(stdin)
		b, err := c.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("credfactory %s: %v: %s", strings.Join(args, " "), err, b)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if _, err := run("", "init"); err != nil {
		return bench.Target{}, nil, err
	}
	for _, a := range [][]string{{"bench-maker", "manufacturer"}, {"bench-admin", "sp-admin"}} {
		if _, err := run("", "admin", "create-stakeholder", "--name", a[0], "--role", a[1]); err != nil {
			return bench.Target{}, nil, err
		}
	}
	maker, err := run("", "admin", "create-api-key", "--stakeholder", "bench-maker")
	if err != nil {
		return bench.Target{}, nil, err
	}
	admin, err := run("", "admin", "create-api-key", "--stakeholder", "bench-admin")
	if err != nil {
		return bench.Target{}, nil, err
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return bench.Target{}, nil, err
	}
	statusPort, err := freeLoopbackPort()
	if err != nil {
		return bench.Target{}, nil, err
	}
	opsPort, err := freeLoopbackPort()
	if err != nil {
		return bench.Target{}, nil, err
	}
	srv := exec.Command(self, "serve", "--data-dir", dir, "--listen", "127.0.0.1:"+port)
	// CRL and OCSP on their plain listener, as a deployment would serve them;
	// /metrics on the operations listener. The audit trail (two lines per
	// certificate) goes to a file, as a deployment would send it to its own
	// sink, not to the bench's terminal.
	srv.Env = append(env, "CREDFACTORY_LOG_LEVEL=warn",
		"CREDFACTORY_LOG_AUDIT_FILE="+filepath.Join(dir, "audit.log"),
		"CREDFACTORY_CA_STATUS_LISTEN=127.0.0.1:"+statusPort, "CREDFACTORY_SERVER_OPS_LISTEN=127.0.0.1:"+opsPort)
	// The bench measures the server, not its rate limits: 64 clients on
	// one loopback address and one tenant would be throttled by design.
	for _, l := range []string{"ENROL_SOURCE", "ENROL_TENANT", "ENROL_OBF", "TOKEN_TENANT", "LOGIN_SOURCE", "LOGIN_ACCOUNT"} {
		srv.Env = append(srv.Env, "CREDFACTORY_LIMITS_"+l+"_RATE=0")
	}
	srv.Stdout, srv.Stderr = io.Discard, os.Stderr
	if err := srv.Start(); err != nil {
		return bench.Target{}, nil, err
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "trust-anchor.pem"))
	anchor, err := ca.ParseCertsPEM(raw)
	if err != nil {
		srv.Process.Kill()
		return bench.Target{}, nil, err
	}
	t := bench.Target{Base: "https://localhost:" + port, Anchor: anchor, ManufacturerKey: maker, AdminKey: admin,
		OwnerName: "bench-maker", SPDomain: benchSPDomain, Ops: "http://127.0.0.1:" + opsPort}
	conn := client.NewConn(t.Base, anchor, nil)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := conn.JSON(ctx, "GET", "/readyz", nil, nil, nil); err == nil {
			break
		}
		if time.Now().After(deadline) {
			srv.Process.Kill()
			return bench.Target{}, nil, fmt.Errorf("the bench server did not become ready")
		}
	}
	fmt.Fprintf(out, "started credfactory serve (pid %d) in %s\n", srv.Process.Pid, dir)
	benchServerPID.Store(int64(srv.Process.Pid))
	stop := func() int64 {
		rss := vmHWM(srv.Process.Pid)
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
		return rss
	}
	return t, stop, nil
}

func vmHWM(pid int) int64 {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// measureCeilings runs the raw operations through the server's own code on
// all cores for two seconds each: HSM ECDSA P-256 sign, certificate issuance
// with the HSM signer (device profile, lint as configured), HSM HMAC, Go
// ECDSA verify, and single-row commits. Forwarding, like EST, spends an
// issuance per certificate.
func measureCeilings(ctx context.Context, dir, storeURL string) (map[string]float64, error) {
	cfg, err := config.Load(dir, "")
	if err != nil {
		return nil, err
	}
	// The bench server started in dir afterwards runs on this key material,
	// whose issuing CA confines device URIs to the SP domain init saw.
	cfg.Portal.SPDomain = benchSPDomain
	if _, err := pki.Init(ctx, cfg); err != nil {
		return nil, err
	}
	p, err := pki.Open(ctx, cfg, nil)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	out := map[string]float64{}
	// A ceiling whose operation fails is a broken bench, not a slow one:
	// its first error ends the run instead of a ceiling of 0/s.
	var failed error
	measure := func(name string, g int, op func() error) {
		r, err := rate(g, op)
		if err != nil && failed == nil {
			failed = fmt.Errorf("ceiling %s: %w", name, err)
		}
		out[name] = r
	}
	signer := p.TLS().PrivateKey.(crypto.Signer)
	digest := sha256.Sum256([]byte("ceiling"))
	measure("ecdsa_sign_hsm", 8, func() error { _, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256); return err })
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	uri := &url.URL{Scheme: "https", Host: benchSPDomain, Path: "/Sceiling"}
	measure("issuance_hsm", 8, func() error {
		_, err := p.CA.Issue(ctx, ca.Request{CSR: csr, Profile: ca.ProfileDevice, AssignedID: "Sceiling", URIs: []*url.URL{uri}})
		return err
	})
	measure("hmac_hsm", 2, func() error { _, err := p.KDF.Sum(ctx, []byte("ceiling")); return err })
	// A forwarded shared key is sealed by the KEK before it is recorded.
	value := make([]byte, 32)
	measure("seal_hsm", 2, func() error { _, err := p.KEK.Seal(ctx, value, []byte("ceiling")); return err })
	sig, _ := ecdsa.SignASN1(rand.Reader, key, digest[:])
	measure("ecdsa_verify", 2, func() error {
		if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
			return fmt.Errorf("verify")
		}
		return nil
	})
	if storeURL == "" {
		storeURL = "sqlite://" + filepath.Join(dir, "ceiling.db")
	}
	st, err := store.Open(ctx, storeURL, store.Options{})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return nil, err
	}
	var n atomic.Int64
	measure("store_commits", 32, func() error {
		i := n.Add(1)
		return st.AppendAudit(ctx, store.AuditEvent{At: time.Now(), Tenant: "ceiling", Actor: "bench", Action: "ceiling", Subject: strconv.FormatInt(i, 10)})
	})
	return out, failed
}

// rate runs op on g goroutines for two seconds and returns ops/s and the
// first error op returned.
func rate(g int, op func() error) (float64, error) {
	var n atomic.Int64
	var first atomic.Pointer[error]
	deadline := time.Now().Add(2 * time.Second)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < g; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := op(); err == nil {
					n.Add(1)
				} else {
					first.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	wg.Wait()
	r := float64(n.Load()) / time.Since(start).Seconds()
	if err := first.Load(); err != nil {
		return r, *err
	}
	return r, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func ints(s string) []int {
	var out []int
	for _, p := range splitList(s) {
		if n, err := strconv.Atoi(p); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func freeLoopbackPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := strings.Cut(ln.Addr().String(), ":")
	return port, nil
}
