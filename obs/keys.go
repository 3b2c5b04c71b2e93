package obs

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"path/filepath"

	"github.com/credfactory/credfactory/hsm"
	"github.com/credfactory/credfactory/hsm/softhsm"
)

// ClientCSRFile is the CSR init-keys writes.
const ClientCSRFile = "obs-client.csr.pem"

// InitResult says what InitKeys did.
type InitResult struct {
	TokenCreated bool
	KeysCreated  []string // URIs of the keys generated now
	ClientCSR    string   // path of the mTLS key's CSR
}

// InitKeys provisions the embedded SoftHSM token (if hsm.embedded), makes
// sure the mTLS key exists in the HSM (generated there, non-extractable),
// creates the spool directories, and writes its CSR into outDir, for an
// sp-admin to register the OBS through the portal (clientCsr). Running it
// again keeps the key and writes the CSR again.
func InitKeys(ctx context.Context, cfg Config, outDir string) (InitResult, error) {
	var res InitResult
	// The line may start dropping jobs before the first run.
	if err := (spool{cfg.Spool}).make(); err != nil {
		return res, err
	}
	if cfg.HSM.Embedded {
		_, created, err := softhsm.Provision(cfg.HSM.Module, cfg.HSM.Dir, cfg.HSM.TokenLabel)
		if err != nil {
			return res, fmt.Errorf("embedded SoftHSM token: %w", err)
		}
		res.TokenCreated = created
	}
	created, err := hsm.EnsureKeys(cfg.HSM.Config, []hsm.KeySpec{
		{URI: cfg.ClientKey, Type: hsm.KeyECDSAP256},
	})
	res.KeysCreated = created
	if err != nil {
		return res, err
	}
	mod, err := hsm.Open(cfg.HSM.Config, nil)
	if err != nil {
		return res, err
	}
	defer mod.Close()
	for _, k := range []struct {
		uri, cn, file string
		dst           *string
	}{
		{cfg.ClientKey, "credfactory OBS client", ClientCSRFile, &res.ClientCSR},
	} {
		signer, err := mod.Signer(ctx, k.uri)
		if err != nil {
			return res, err
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: k.cn}}, signer)
		if err != nil {
			return res, fmt.Errorf("CSR for %s: %w", k.uri, err)
		}
		if err := writeDurable(outDir, k.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})); err != nil {
			return res, err
		}
		*k.dst = filepath.Join(outDir, k.file)
	}
	return res, nil
}

// OpenHSM opens the OBS's token and loads its key.
func OpenHSM(ctx context.Context, cfg Config) (*hsm.Module, Keys, error) {
	mod, err := hsm.Open(cfg.HSM.Config, nil)
	if err != nil {
		return nil, Keys{}, fmt.Errorf("open the OBS's HSM (did obs init-keys run?): %w", err)
	}
	client, err := mod.Signer(ctx, cfg.ClientKey)
	if err != nil {
		mod.Close()
		return nil, Keys{}, fmt.Errorf("client_key: %w", err)
	}
	return mod, Keys{Client: client}, nil
}
