package oauth

import "net/http"

// metadata handles GET /.well-known/oauth-authorization-server[/path]
// (RFC 8414). Every URL comes from the configured issuer, never from the
// request, so a forged Host cannot point a client elsewhere; the issuer
// is identical in every form of the path (RFC 8414 §3.3).
func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                         s.cfg.Issuer,
		"authorization_endpoint":                         s.endpoint("/oauth/authorize"),
		"token_endpoint":                                 s.endpoint("/oauth/token"),
		"registration_endpoint":                          s.endpoint("/oauth/register"),
		"revocation_endpoint":                            s.endpoint("/oauth/revoke"),
		"response_types_supported":                       []string{"code"},
		"response_modes_supported":                       []string{"query"},
		"grant_types_supported":                          []string{"authorization_code", "refresh_token"},
		"code_challenge_methods_supported":               []string{"S256"},
		"token_endpoint_auth_methods_supported":          []string{"none", "client_secret_basic", "client_secret_post"},
		"revocation_endpoint_auth_methods_supported":     []string{"none", "client_secret_basic", "client_secret_post"},
		"scopes_supported":                               Scopes(),
		"client_id_metadata_document_supported":          true,
		"authorization_response_iss_parameter_supported": true,
	})
}
