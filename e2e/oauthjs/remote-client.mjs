// mcp-remote (the stdio ↔ remote bridge many desktop clients use) in its
// OAuth mode, driven by e2e/oauth_test.go: the SDK's stdio client starts
// mcp-remote with no token at all; mcp-remote registers (DCR), prints the
// authorization URL (the Go side opens it in Chromium, signs in and
// consents), takes the code at its own loopback callback, and then the
// tools are listed through it. One JSON object per line on stdout.
//
//   node remote-client.mjs <server url> <callback port>
//
// Environment: MCPJS_DIR (e2e/mcpjs, where the SDK and mcp-remote are
// installed), MCP_REMOTE_CONFIG_DIR (where mcp-remote keeps its tokens),
// BROWSER=true (so mcp-remote's "open a browser" starts nothing).
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createInterface } from 'node:readline';

const dir = process.env.MCPJS_DIR;
const sdk = (p) => import(pathToFileURL(path.join(dir, 'node_modules/@modelcontextprotocol/sdk/dist/esm', p)).href);
const { Client } = await sdk('client/index.js');
const { StdioClientTransport } = await sdk('client/stdio.js');

const [serverUrl, port] = process.argv.slice(2);
const emit = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + '\n');

async function main() {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [path.join(dir, 'node_modules/mcp-remote/dist/proxy.js'), serverUrl, port, '--transport', 'http-only'],
    env: { ...process.env },
    stderr: 'pipe',
  });
  // mcp-remote logs the URL on stderr after "Please authorize this client by visiting:".
  let next = false;
  createInterface({ input: transport.stderr }).on('line', (line) => {
    process.stderr.write(line + '\n');
    const text = line.replace(/^\[\d+\]\s*/, '').trim();
    if (next && text.startsWith('http')) { emit('authorize', { url: text }); next = false; }
    if (text.includes('Please authorize this client by visiting')) next = true;
  });
  const client = new Client({ name: 'mcpfeedback-remote-e2e', version: '1.0.0' });
  await client.connect(transport);
  const { tools } = await client.listTools();
  emit('tools', { tools: tools.map((x) => x.name) });
  await client.close();
  emit('done');
}

main().then(() => process.exit(0), (e) => { emit('error', { message: String(e?.stack ?? e) }); process.exit(1); });
