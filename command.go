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
		ttl, maxTTL                time.Duration
		printJTI                   bool
	)
	c := &cobra.Command{
		Use:   "token --sub <subject> [--ttl 1h] [--scope 'feedback:create feedback:read'] [--name <name>] [--iss <issuer>] [--aud <audience>] [--print-jti]",
		Short: "Print a bearer token signed with $JWT_SECRET",
		Long: `Print an HS256 bearer token for an agent or app, signed with the secret in
the JWT_SECRET environment variable (the same one the Caddyfile reads with
{env.JWT_SECRET}).

Without --scope the token may create and read its own sessions; with --scope
it may do only what it lists: feedback:create, feedback:read, and
feedback:answer (answer its own questions with the token; never given
without --scope).

--ttl is at most 720h (30 days), the longest lifetime the server accepts by
default; --max-ttl raises that limit here, for servers whose jwt_max_ttl is
raised too. Every token carries a random id (jti); --print-jti writes it to
standard error, so that this one token can later be revoked with
jwt_denied_jtis without rotating the secret.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			secret := os.Getenv("JWT_SECRET")
			if secret == "" {
				return errors.New("JWT_SECRET is not set")
			}
			o := TokenOptions{Subject: sub, TTL: ttl, MaxTTL: maxTTL, Name: name, Issuer: iss, Audience: aud, ID: auth.NewTokenID()}
			if cmd.Flags().Changed("scope") {
				o.Scope = strings.Fields(strings.ReplaceAll(scope, ",", " "))
			}
			tok, err := MintToken([]byte(secret), o)
			if err != nil {
				return err
			}
			if printJTI {
				if _, err := fmt.Fprintln(cmd.ErrOrStderr(), "jti:", o.ID); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&sub, "sub", "", "subject: who the token acts for (required)")
	f.DurationVar(&ttl, "ttl", time.Hour, "lifetime of the token, at most --max-ttl")
	f.DurationVar(&maxTTL, "max-ttl", auth.DefaultMaxTTL, "longest --ttl allowed; raise only with the server's jwt_max_ttl")
	f.StringVar(&scope, "scope", "", "space- or comma-separated scopes: feedback:create, feedback:read, feedback:answer")
	f.StringVar(&name, "name", "", "display name (optional)")
	f.StringVar(&iss, "iss", "", "issuer; must match jwt_issuer when that is set")
	f.StringVar(&aud, "aud", "", "audience; must match jwt_audience, and only when that is set")
	f.BoolVar(&printJTI, "print-jti", false, "also write the token's id (jti) to standard error")
	_ = c.MarkFlagRequired("sub")
	return c
}
