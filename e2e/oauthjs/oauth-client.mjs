// An MCP client that speaks only OAuth: the official TypeScript SDK's
// Client and StreamableHTTPClientTransport with an OAuthClientProvider,
// driven by e2e/oauth_test.go against the real Caddy binary. It prints one
// JSON object per line on stdout ({"event": ...}); where the Go side must
// act (the person signs in and consents in Chromium, answers the
// question), the script waits for a line on stdin.
//
//   node oauth-client.mjs <server url>
//
// Environment: MCPJS_DIR (where the SDK is installed: e2e/mcpjs),
// CALLBACK_URL (the redirect URI; the Go test listens there),
// CLIENT_METADATA_URL (optional: register with a Client ID Metadata
// Document at this https URL instead of Dynamic Client Registration).
// Tokens are never printed.
import { createInterface } from 'node:readline';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const sdk = (p) => import(pathToFileURL(path.join(process.env.MCPJS_DIR, 'node_modules/@modelcontextprotocol/sdk/dist/esm', p)).href);
const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { UnauthorizedError, discoverAuthorizationServerMetadata, refreshAuthorization } = await sdk('client/auth.js');

const [serverUrl] = process.argv.slice(2);
const callback = process.env.CALLBACK_URL;
const metadataUrl = process.env.CLIENT_METADATA_URL || undefined;
const emit = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const readGo = async () => { const { value, done } = await lines.next(); if (done) throw new Error('stdin closed'); return value.trim(); };

// The provider keeps everything in memory, as a browser-less app would in
// its own storage.
const store = { client: undefined, tokens: undefined, verifier: undefined };
const provider = {
  get redirectUrl() { return callback; },
  get clientMetadata() {
    return { client_name: 'OAuth e2e client', redirect_uris: [callback], grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'], token_endpoint_auth_method: 'none' };
  },
  clientMetadataUrl: metadataUrl,
  clientInformation: () => store.client,
  saveClientInformation: (info) => { store.client = info; },
  tokens: () => store.tokens,
  saveTokens: (t) => { store.tokens = t; },
  codeVerifier: () => store.verifier,
  saveCodeVerifier: (v) => { store.verifier = v; },
  redirectToAuthorization: (url) => { emit('authorize', { url: url.href }); },
};

const newClient = () => new Client({ name: 'mcpfeedback-oauth-e2e', version: '1.0.0' });
const transport = () => new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider });
const structured = (res) => ({ isError: !!res.isError, structured: res.structuredContent ?? null, text: (res.content ?? []).map((c) => c.text).join('\n') });

// rawStatus is what the server answers a bare initialize with this access token.
async function rawStatus(accessToken) {
  const res = await fetch(serverUrl, {
    method: 'POST',
    headers: { Authorization: `Bearer ${accessToken}`, 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }),
  });
  await res.body?.cancel();
  return { status: res.status, challenge: res.headers.get('www-authenticate') };
}

async function main() {
  // 1. No token: 401 → discovery → registration → authorization URL.
  let client = newClient();
  let t = transport();
  try {
    await client.connect(t);
    throw new Error('connected without authorization');
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
  }
  emit('registered', { clientId: store.client?.client_id, viaMetadataDocument: !!metadataUrl && store.client?.client_id === metadataUrl });
  // 2. The person signs in and consents (the Go side, in Chromium); the
  // callback's code comes back on stdin.
  const code = await readGo();
  await t.finishAuth(code);
  emit('authorized', { scope: store.tokens?.scope, tokenType: store.tokens?.token_type, hasRefresh: !!store.tokens?.refresh_token });

  // 3. Connected with the access token: list tools, ask, read the answer.
  client = newClient();
  await client.connect(transport());
  const { tools } = await client.listTools();
  emit('tools', { tools: tools.map((x) => x.name) });
  const created = await client.callTool({ name: 'interactive_feedback', arguments: { message: 'Signed in with OAuth?', predefinedOptions: ['yes', 'no'] } });
  emit('created', structured(created));
  await readGo(); // the person answers
  const result = await client.callTool({ name: 'get_feedback_result', arguments: { sessionId: created.structuredContent.sessionId } });
  emit('result', structured(result));
  await client.close();

  // 4. Refresh: a new pair; the old refresh token is spent.
  const issuer = new URL(serverUrl).origin + (process.env.ISSUER_PATH ?? '');
  const metadata = await discoverAuthorizationServerMetadata(issuer);
  const before = store.tokens;
  const after = await refreshAuthorization(issuer, { metadata, clientInformation: store.client, refreshToken: before.refresh_token, resource: new URL(issuer) });
  store.tokens = after;
  client = newClient();
  await client.connect(transport());
  const again = await client.listTools();
  await client.close();
  emit('refreshed', { rotated: after.refresh_token !== before.refresh_token && after.access_token !== before.access_token, tools: again.tools.length });

  // 5. Revoke (RFC 7009): the next call with the access token is a 401.
  const rev = await fetch(metadata.revocation_endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token: after.refresh_token, token_type_hint: 'refresh_token', client_id: store.client.client_id }),
  });
  const afterRevoke = await rawStatus(after.access_token);
  emit('revoked', { revokeStatus: rev.status, ...afterRevoke });
  emit('done');
}

main().then(() => process.exit(0), (e) => { emit('error', { message: String(e?.stack ?? e) }); process.exit(1); });
