package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/credfactory/credfactory/kdf"
	"github.com/credfactory/credfactory/portal"
	"github.com/credfactory/credfactory/store"
	"github.com/spf13/cobra"
)

// PasswordEnv carries a new stakeholder's password for scripts; otherwise it
// is read from standard input. Never a flag: flags end up in shell history
// and process listings.
const PasswordEnv = "CREDFACTORY_PASSWORD"

func newAdmin(g *globals) *cobra.Command {
	admin := &cobra.Command{Use: "admin", Short: "Bootstrap accounts and API keys in the registry"}
	var name, role, actsFor string
	create := &cobra.Command{
		Use:   "create-stakeholder",
		Short: "Create a portal account (password from " + PasswordEnv + " or standard input)",
		Long: `create-stakeholder adds a portal account. Roles: sp-admin, manufacturer,
subscriber, installer (with --acts-for SUBSCRIBER). The password (at least 12
characters) comes from ` + PasswordEnv + ` or the first line of standard input,
never from a flag.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			password, err := readPassword(cmd.InOrStdin())
			if err != nil {
				return err
			}
			return withStore(cmd.Context(), g, func(st *store.Store) error {
				p := portal.New(portal.Config{}, st, nil, nil, nil, nil)
				s, err := p.CreateStakeholder(cmd.Context(), name, role, password, actsFor)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "created %s %q (id %s)\n", s.Role, s.Name, s.ID)
				return nil
			})
		},
	}
	create.Flags().StringVar(&name, "name", "", "account name (login)")
	create.Flags().StringVar(&role, "role", "", "sp-admin, manufacturer, subscriber or installer")
	create.Flags().StringVar(&actsFor, "acts-for", "", "for an installer: the subscriber it acts for")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("role")

	var holder, keyName string
	var keyScopes []string
	key := &cobra.Command{
		Use:   "create-api-key",
		Short: "Create an API key for a stakeholder and print it (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd.Context(), g, func(st *store.Store) error {
				s, err := st.StakeholderBy(cmd.Context(), "name", holder)
				if err != nil {
					return fmt.Errorf("stakeholder %q: %w", holder, err)
				}
				p := portal.New(portal.Config{}, st, nil, nil, nil, nil)
				k, _, err := p.NewAPIKey(cmd.Context(), portal.Principal{Stakeholder: s, Via: "admin-cli"}, keyName, keyScopes...)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), k)
				return nil
			})
		},
	}
	key.Flags().StringVar(&holder, "stakeholder", "", "the account the key acts as")
	key.Flags().StringVar(&keyName, "name", "cli", "a name for the key")
	key.Flags().StringSliceVar(&keyScopes, "scope", nil, "what the key may do: read, devices, enrol, obfs, keys, maf (repeat or comma-separate; default all)")
	_ = key.MarkFlagRequired("stakeholder")
	var disableName string
	disable := &cobra.Command{
		Use:   "disable-stakeholder",
		Short: "Disable an account: its sessions end and its API keys stop working at once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withStore(cmd.Context(), g, func(st *store.Store) error {
				s, err := st.StakeholderBy(cmd.Context(), "name", disableName)
				if err != nil {
					return fmt.Errorf("stakeholder %q: %w", disableName, err)
				}
				if err := st.DisableStakeholder(cmd.Context(), s.ID, "admin-cli", time.Now()); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "disabled %q\n", s.Name)
				return nil
			})
		},
	}
	disable.Flags().StringVar(&disableName, "name", "", "account name")
	_ = disable.MarkFlagRequired("name")
	var fqdnHolder, fqdn string
	addFQDN := &cobra.Command{
		Use:   "add-admin-fqdn",
		Short: "Give a stakeholder's tenant an adminFQDN it may register MAF clients and keys under (TS-0003 §8.8)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := kdf.KmID("x", fqdn); err != nil {
				return fmt.Errorf("--fqdn: %w", err)
			}
			return withStore(cmd.Context(), g, func(st *store.Store) error {
				s, err := st.StakeholderBy(cmd.Context(), "name", fqdnHolder)
				if err != nil {
					return fmt.Errorf("stakeholder %q: %w", fqdnHolder, err)
				}
				if err := st.AddAdminFQDN(cmd.Context(), strings.ToLower(fqdn), s.Tenant(), "admin-cli", time.Now()); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "adminFQDN %s belongs to %q\n", strings.ToLower(fqdn), s.Name)
				return nil
			})
		},
	}
	addFQDN.Flags().StringVar(&fqdnHolder, "stakeholder", "", "the account whose tenant gets the adminFQDN")
	addFQDN.Flags().StringVar(&fqdn, "fqdn", "", "the adminFQDN")
	_ = addFQDN.MarkFlagRequired("stakeholder")
	_ = addFQDN.MarkFlagRequired("fqdn")
	admin.AddCommand(create, key, disable, addFQDN, newAddNodeCA(g))
	return admin
}

func withStore(ctx context.Context, g *globals, fn func(*store.Store) error) error {
	cfg, err := g.load()
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return err
	}
	return fn(st)
}

func readPassword(stdin io.Reader) (string, error) {
	if pw, ok := os.LookupEnv(PasswordEnv); ok && pw != "" {
		return pw, nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", fmt.Errorf("no password: set %s or pipe it on standard input", PasswordEnv)
	}
	return pw, nil
}
