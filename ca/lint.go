package ca

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	zx509 "github.com/zmap/zcrypto/x509"
	// zlint's root package registers every lint in lint.GlobalRegistry.
	_ "github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// excludedLintSources are rule sets written for the public Web PKI, code
// signing and S/MIME. credfactory runs a private IoT PKI whose relying parties
// are the SP's own devices and servers; it is bound by RFC 5280 and oneM2M,
// not by the CA/Browser Forum, ETSI trust-service rules or browser root
// programs. Of these only CABF_BR lints fire on our profiles, all for
// Web-PKI-only demands: certificatePolicies present and non-empty
// (e_sub_cert_certificate_policies_missing, e_sub_cert_cert_policy_empty,
// e_sub_ca_certificate_policies_missing, e_invalid_ca_certificate_policies),
// public TLDs and public IPs only (e_dnsname_not_valid_tld,
// e_ext_san_contains_reserved_ip: SP-internal names are the norm here), C and
// O in CA subjects (e_ca_country_name_missing,
// e_ca_organization_name_missing), a CRL DP in every sub-CA
// (e_sub_ca_crl_distribution_points_missing: set only when Config.CRLURL is),
// plus warnings we do not block on. The other sources are excluded because
// none of their programmes covers this PKI, so that a future zlint release
// adding lints there cannot start refusing our certificates.
var excludedLintSources = lint.SourceList{
	lint.CABFBaselineRequirements,
	lint.CABFEVGuidelines,
	lint.CABFSMIMEBaselineRequirements,
	lint.CABFCSBaselineRequirements,
	lint.MozillaRootStorePolicy,
	lint.AppleRootStorePolicy,
	lint.ChromeRootStorePolicy,
	lint.EtsiEsi,
}

// excludedLintNames are lints skipped for every profile.
var excludedLintNames = []string{
	// Checks whether the certificate was signed by one of eight compromised
	// Web-PKI CA keys by trying eight P-384 signature verifications. The
	// certificate we lint carries a placeholder signature (the issuer signs
	// only after the lint), so it can never fire, yet it was ~95% of the
	// lint cost (6 ms of ~7 ms per certificate in BenchmarkIssue).
	"e_cert_issued_by_compromised_emudhra_ca",
	// Refuses ECDSA keys with a tiny private scalar. checkPublicKey refuses
	// the same keys (smallkey.go) for a table lookup instead of ~20 point
	// additions, before the token is spent and with linting off too.
	"e_ecdsa_small_private_key",
}

// lintSet is the lints every profile runs, in registry order, with the
// registry's configuration. Only error-level lints are kept: zlint's naming
// rule (TestLintNames in zlint) makes the e_/w_/n_ prefix the severity a lint
// reports, and only Error and Fatal block issuance (run), so running
// the ~30 warning and notice lints would cost a fifth of the lint time for
// results nothing reads.
type lintSet struct {
	lints  []*lint.CertificateLint
	config lint.Configuration
}

func newLintSet(exclude []string) (lintSet, error) {
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{
		ExcludeSources: excludedLintSources,
		ExcludeNames:   exclude,
	})
	if err != nil {
		return lintSet{}, err
	}
	s := lintSet{config: reg.GetConfiguration()}
	for _, l := range reg.CertificateLints().Lints() {
		if strings.HasPrefix(l.Name, "e_") {
			s.lints = append(s.lints, l)
		}
	}
	return s, nil
}

// run executes every lint of s on c, the way zlint.LintCertificateEx does
// (CertificateLint.Execute: configure, CheckApplies, CheckEffective,
// Execute, panics turned into Fatal), without building the per-call sorted
// name list and result map that LintCertificateEx allocates: that
// bookkeeping alone was a fifth of zlint's time per certificate.
func (s lintSet) run(c *zx509.Certificate) []string {
	var failed []string
	for _, l := range s.lints {
		if r := l.Execute(c, s.config); r.Status >= lint.Error {
			msg := l.Name
			if r.Details != "" {
				msg += " (" + r.Details + ")"
			}
			failed = append(failed, msg)
		}
	}
	sort.Strings(failed)
	return failed
}

// lintRegistry is built once: every profile runs the same lints, since
// device URI SANs are absolute URIs (AssignedIDURI's https://SP-domain/AE-ID)
// and e_ext_san_uri_relative and e_ext_san_uri_format_invalid apply to them
// as to every certificate.
var lintRegistry = sync.OnceValues(func() (lintSet, error) { return newLintSet(excludedLintNames) })

// linter implements Boulder-style pre-issuance linting of the exact
// TBSCertificate the issuer key is about to sign (sign.go builds it once): a
// bad certificate never carries a signature that chains to our root.
type linter struct {
	algID []byte // the issuer's signature AlgorithmIdentifier
	set   lintSet
}

func newLinter(alg sigAlg) (*linter, error) {
	reg, err := lintRegistry()
	if err != nil {
		return nil, fmt.Errorf("build lint registry: %w", err)
	}
	return &linter{algID: alg.algID, set: reg}, nil
}

// lintSignature stands in for the signature in the certificate zlint reads:
// lints judge the TBS and the outer algorithm, never the signature value,
// which does not exist yet.
var lintSignature = make([]byte, 72)

// check lints tbs, the TBSCertificate about to be signed.
func (l *linter) check(tbs []byte) error {
	der, err := assembleCertificate(tbs, l.algID, lintSignature)
	if err != nil {
		return fmt.Errorf("ca: lint: %w", err)
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return newErr(ErrPolicy, err, "lint: certificate does not parse")
	}
	if failed := l.set.run(zc); len(failed) > 0 {
		return newErr(ErrPolicy, nil, "lint: certificate fails %s", strings.Join(failed, ", "))
	}
	return nil
}
