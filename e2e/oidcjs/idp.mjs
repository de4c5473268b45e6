// A real OpenID provider issuing JWT access tokens (RFC 9068) for the
// external-IdP e2e test (e2e/idp_tokens_test.go): panva/oidc-provider
// (OpenID Certified) with client credentials and resource indicators
// (RFC 8707), as an organisation's Keycloak or Entra ID would issue tokens
// for the feedback server.
//
//   node idp.mjs <port> <keys.json>
//
// It listens on 127.0.0.1:<port> with the issuer http://127.0.0.1:<port>
// and signs with the private JWKs in <keys.json> ({"keys":[…]}, each with
// a kid); its jwks_uri publishes their public halves. The test restarts it
// with another file to rotate keys.
//
// Clients (client_secret_basic, grant client_credentials only):
//   agent-rs / agent-rs-secret: access tokens signed RS256
//   agent-es / agent-es-secret: access tokens signed ES256
// Any https resource indicator is a resource server: the token's aud is
// the resource, its scope at most "feedback:create feedback:read".
//
// GET /test/jwks-fetches answers how many times this process served its
// JWKS, so the test can tell a refetch from a cached key. It prints
// {"ready":"<issuer>"} once it listens.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const [port, keysFile] = process.argv.slice(2);
if (!port || !keysFile) {
  console.error('usage: node idp.mjs <port> <keys.json>');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const jwks = JSON.parse(readFileSync(keysFile, 'utf8'));

const algOf = { 'agent-rs': 'RS256', 'agent-es': 'ES256' };
const provider = new Provider(issuer, {
  jwks,
  clients: Object.keys(algOf).map((id) => ({
    client_id: id,
    client_secret: `${id}-secret`,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'feedback:create feedback:read',
  })),
  scopes: ['feedback:create', 'feedback:read'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // No default: a request that names no resource gets an opaque
      // token, which no resource server can check; the test names one.
      defaultResource: () => undefined,
      getResourceServerInfo: (ctx, resourceIndicator, client) => {
        if (!resourceIndicator.startsWith('https://')) {
          throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
        }
        return {
          scope: 'feedback:create feedback:read',
          audience: resourceIndicator,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: algOf[client.clientId] } },
        };
      },
    },
  },
  ttl: { ClientCredentials: 600 },
  cookies: { keys: ['mcpfb-e2e-idp-cookie-key-0123456789'] },
});
provider.proxy = false;

let jwksFetches = 0;
provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path === '/test/jwks-fetches') {
    ctx.body = { fetches: jwksFetches };
    return;
  }
  if (ctx.method === 'GET' && ctx.path === '/jwks') jwksFetches += 1;
  await next();
});

const server = createServer(provider.callback());
server.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ ready: issuer }) + '\n');
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
