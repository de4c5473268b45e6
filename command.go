package mcpfeedback

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/mcpfeedback/caddy-mcp-feedback/internal/auth"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "mcp-feedback",
		Short: "Tools for the mcp_feedback module",
		Long:  "Tools for the mcp_feedback module. `caddy mcp-feedback token` mints a bearer token for an agent or app.",
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(tokenCommand())
			cmd.AddCommand(askCommand())
		},
	})
}

// TokenOptions describe a token minted by MintToken.
type TokenOptions = auth.TokenOptions

// MintToken signs an HS256 bearer token the module accepts, for programmatic
// use (tests, provisioning scripts, a companion app's backend).
func MintToken(secret []byte, o TokenOptions) (string, error) {
	return auth.Mint(secret, o)
}

func tokenCommand() *cobra.Command {
	var (
		sub, name, iss, aud, scope string
		ttl                        time.Duration
	)
	c := &cobra.Command{
		Use:   "token --sub <subject> [--ttl 1h] [--scope 'feedback:create feedback:read'] [--name <name>] [--iss <issuer>] [--aud <audience>]",
		Short: "Print a bearer token signed with $JWT_SECRET",
		Long: `Print an HS256 bearer token for an agent or app, signed with the secret in
the JWT_SECRET environment variable (the same one the Caddyfile reads with
{env.JWT_SECRET}). Without --scope the token may create and read its own
sessions; with --scope it may do only what it lists.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			secret := os.Getenv("JWT_SECRET")
			if secret == "" {
				return errors.New("JWT_SECRET is not set")
			}
			o := TokenOptions{Subject: sub, TTL: ttl, Name: name, Issuer: iss, Audience: aud}
			if cmd.Flags().Changed("scope") {
				o.Scope = strings.Fields(strings.ReplaceAll(scope, ",", " "))
			}
			tok, err := MintToken([]byte(secret), o)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&sub, "sub", "", "subject: who the token acts for (required)")
	f.DurationVar(&ttl, "ttl", time.Hour, "lifetime of the token")
	f.StringVar(&scope, "scope", "", "space- or comma-separated scopes: feedback:create, feedback:read")
	f.StringVar(&name, "name", "", "display name (optional)")
	f.StringVar(&iss, "iss", "", "issuer; must match jwt_issuer when that is set")
	f.StringVar(&aud, "aud", "", "audience; must match jwt_audience when that is set")
	_ = c.MarkFlagRequired("sub")
	return c
}
