// Command caddy is Caddy with the standard modules and mcp_feedback, the same
// binary `xcaddy build --with github.com/mcpfeedback/caddy-mcp-feedback` makes.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mcpfeedback/caddy-mcp-feedback"
)

func main() {
	caddycmd.Main()
}
