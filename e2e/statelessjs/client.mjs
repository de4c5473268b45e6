// A stateless MCP client: the official TypeScript SDK v2
// (@modelcontextprotocol/client) pinned to protocol 2026-07-28, driven by
// e2e/stateless_test.go. It has no session and takes no server-to-client
// requests: elicitation reaches it in input-required results, which the
// SDK fulfils through the handler below and retries on its own. One JSON
// event per line on stdout.
//
//   node client.mjs <url|form> <url>
//
// The bearer token comes from MCP_TOKEN, never from argv.
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const [scenario, url] = process.argv.slice(2);
const token = process.env.MCP_TOKEN;
if (!scenario || !url || !token) {
  console.error('usage: MCP_TOKEN=... node client.mjs <url|form> <url>');
  process.exit(2);
}
const emit = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + '\n');

const client = new Client({ name: 'mcpfeedback-e2e-stateless', version: '1.0.0' }, {
  capabilities: { elicitation: scenario === 'form' ? { form: {} } : { url: {} } },
  versionNegotiation: { mode: { pin: '2026-07-28' } },
  inputRequired: { autoFulfill: true },
});
client.setRequestHandler('elicitation/create', async (req) => {
  emit('elicitation', { params: req.params });
  if (req.params.mode === 'url') return { action: 'accept' }; // the user opened the page
  const opts = req.params.requestedSchema.properties.answer.enum;
  return { action: 'accept', content: { answer: opts[opts.length - 1], comment: 'picked in the client' } };
});

async function main() {
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }));
  emit('connected', { protocolVersion: client.getNegotiatedProtocolVersion?.() ?? null, sessionId: client.transport?.sessionId ?? null });
  const res = await client.callTool({ name: 'interactive_feedback',
    arguments: { message: 'Stateless: which one?', predefinedOptions: ['left', 'right'], wait: true } }, { timeout: 120000 });
  emit('result', { isError: !!res.isError, structured: res.structuredContent ?? null, text: (res.content ?? []).map((c) => c.text).join('\n') });
  await client.close();
  emit('done');
}

main().then(() => process.exit(0), (e) => { emit('error', { message: String(e?.stack ?? e) }); process.exit(1); });
