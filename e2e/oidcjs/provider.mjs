// A real OpenID provider for the `login oidc` e2e tests: panva/oidc-provider
// (OpenID Certified), with its development interactions, which sign in any
// login name with any password and then ask for consent.
//
//   node provider.mjs <port> <redirect_uri>
//
// It listens on 127.0.0.1:<port> with the issuer http://localhost:<port>,
// and registers one confidential client: mcpfb / mcpfb-e2e-secret, whose
// only redirect URI is <redirect_uri>. Account "<name>" has the email
// <name>@example.com (verified, except for names starting with
// "unverified"). It prints {"ready":"<issuer>"} once it listens.
import { createServer } from 'node:http';
import Provider from 'oidc-provider';

const [port, redirectURI] = process.argv.slice(2);
if (!port || !redirectURI) {
  console.error('usage: node provider.mjs <port> <redirect_uri>');
  process.exit(2);
}
const issuer = `http://localhost:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'mcpfb',
    client_secret: 'mcpfb-e2e-secret',
    redirect_uris: [redirectURI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@example.com`,
          email_verified: !id.startsWith('unverified'),
          name: `Person ${id}`,
          preferred_username: id,
        };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
  },
  // The scope's claims go into the ID token too, as many providers
  // (Google, Entra ID, Keycloak) put them; the module reads only the ID token.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  cookies: { keys: ['mcpfb-e2e-cookie-key-0123456789'] },
  features: { devInteractions: { enabled: true } },
});
// Plain-http loopback only: keep the provider's cookies usable over http.
provider.proxy = false;

const server = createServer(provider.callback());
server.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ ready: issuer }) + '\n');
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
