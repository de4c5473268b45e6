// A real MCP client (the official TypeScript SDK) that e2e/mcp_test.go
// drives against a running Caddy. It prints one JSON object per line on
// stdout ({"event": ...}); where the Go side must act first (answer as the
// person, check the server's log), the script waits for a line on stdin.
//
//   node client.mjs <transport> <url> <scenario>
//
// transport: http | sse (the SDK's own transports), or bridge-http |
// bridge-sse (the SDK's stdio client talking to mcp-remote, which talks to
// the server). The bearer token comes from MCP_TOKEN, never from argv.
// scenario: basic | wait | cancel | disconnect | elicit | elicit-form
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { ElicitRequestSchema, ElicitationCompleteNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const [kind, url, scenario] = process.argv.slice(2);
const token = process.env.MCP_TOKEN;
if (!kind || !url || !scenario || !token) {
  console.error('usage: MCP_TOKEN=... node client.mjs <http|sse|bridge-http|bridge-sse> <url> <scenario>');
  process.exit(2);
}

const emit = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
// waitGo blocks until the Go test writes a line: it has done its part.
const waitGo = async () => { const { done } = await lines.next(); if (done) throw new Error('stdin closed'); };

function transport() {
  const requestInit = { headers: { Authorization: `Bearer ${token}` } };
  switch (kind) {
    case 'http': return new StreamableHTTPClientTransport(new URL(url), { requestInit });
    case 'sse': return new SSEClientTransport(new URL(url), { requestInit });
    case 'bridge-http':
    case 'bridge-sse': {
      const here = path.dirname(fileURLToPath(import.meta.url));
      return new StdioClientTransport({
        command: process.execPath,
        args: [path.join(here, 'node_modules/mcp-remote/dist/proxy.js'), url,
          // The documented way to keep the secret out of argv: the header
          // names an environment variable that mcp-remote expands.
          '--header', 'Authorization:${AUTH_HEADER}',
          '--transport', kind === 'bridge-http' ? 'http-only' : 'sse-only'],
        env: { ...process.env, AUTH_HEADER: `Bearer ${token}` },
        stderr: 'inherit',
      });
    }
    default: throw new Error(`unknown transport ${kind}`);
  }
}

const completed = []; // elicitationIds the server said are complete
const eliciting = scenario.startsWith('elicit');
const capabilities = eliciting ? { elicitation: { url: {}, form: {} } } : {};
const client = new Client({ name: 'mcpfeedback-e2e', version: '1.0.0' }, { capabilities });
if (eliciting) {
  client.setRequestHandler(ElicitRequestSchema, async (req, extra) => {
    // requestId tells whose request it is: a held call's own (a string) or mcp-go's (a number).
    emit('elicitation', { params: req.params, requestId: extra.requestId });
    if (req.params.mode === 'url') return { action: 'accept' };
    // A form: the user picks the last option and adds a comment.
    const opts = req.params.requestedSchema.properties.answer.enum;
    return { action: 'accept', content: { answer: opts[opts.length - 1], comment: 'picked in the client' } };
  });
  client.setNotificationHandler(ElicitationCompleteNotificationSchema, async (n) => {
    completed.push(n.params.elicitationId);
    emit('elicitation-complete', { params: n.params });
  });
}

const structured = (res) => ({ isError: !!res.isError, structured: res.structuredContent ?? null, text: (res.content ?? []).map((c) => c.text).join('\n') });

async function main() {
  await client.connect(transport());
  emit('connected', { server: client.getServerVersion()?.name });
  switch (scenario) {
    case 'basic': {
      const { tools } = await client.listTools();
      emit('tools', { tools: tools.map((t) => ({ name: t.name, annotations: t.annotations, hasOutputSchema: !!t.outputSchema, description: t.description })) });
      const created = await client.callTool({ name: 'interactive_feedback', arguments: { message: 'Ship **v2** today?', predefinedOptions: ['yes', 'no'] } });
      emit('created', structured(created));
      await waitGo(); // the person answers through the REST API
      const result = await client.callTool({ name: 'get_feedback_result', arguments: { sessionId: created.structuredContent.sessionId } });
      emit('result', structured(result));
      const bad = await client.callTool({ name: 'interactive_feedback', arguments: { message: '', timeout: 5 } });
      emit('bad', structured(bad));
      break;
    }
    case 'wait': {
      let progress = 0;
      const result = await client.callTool(
        // MCP_TO (comma-separated person ids) addresses the question to them too.
        { name: 'interactive_feedback', arguments: { message: 'Which database?', predefinedOptions: ['postgres', 'sqlite'], wait: true, ...(process.env.MCP_TO ? { to: process.env.MCP_TO.split(',') } : {}) } },
        undefined,
        {
          onprogress: (p) => { progress++; emit('progress', { message: p.message, progress: p.progress, total: p.total }); },
          resetTimeoutOnProgress: true,
          timeout: 120000,
        });
      emit('result', { ...structured(result), progressSeen: progress });
      break;
    }
    case 'cancel':
    case 'disconnect': {
      const created = await client.callTool({ name: 'interactive_feedback', arguments: { message: 'Will you answer?' } });
      emit('created', structured(created));
      const ac = new AbortController();
      let gone = false;
      const call = client.callTool(
        { name: 'get_feedback_result', arguments: { sessionId: created.structuredContent.sessionId, wait: 600 } },
        undefined,
        {
          signal: ac.signal, resetTimeoutOnProgress: true, timeout: 120000,
          onprogress: async (p) => {
            if (gone) return;
            gone = true;
            emit('progress', { message: p.message });
            if (scenario === 'cancel') {
              ac.abort('the agent changed its mind'); // sends notifications/cancelled
              emit('aborted');
            } else {
              await client.close(); // drops the connection, no cancel sent
              emit('closed');
            }
          },
        });
      const outcome = await call.then(() => 'resolved', (e) => `rejected: ${e?.message ?? e}`);
      emit('call-ended', { outcome });
      if (scenario === 'cancel') {
        await waitGo(); // the server has logged that it stopped waiting
        // The session is still usable after a cancel.
        const status = await client.callTool({ name: 'check_feedback_status', arguments: { sessionId: created.structuredContent.sessionId } });
        emit('status', structured(status));
      }
      break;
    }
    case 'elicit': {
      const result = await client.callTool(
        { name: 'interactive_feedback', arguments: { message: 'Open the page, please', wait: true } },
        undefined, { onprogress: () => {}, resetTimeoutOnProgress: true, timeout: 120000 });
      // The completion is sent just before the result; it must not be lost.
      emit('result', { ...structured(result), completedBeforeResult: completed });
      break;
    }
    case 'elicit-form': {
      const result = await client.callTool(
        { name: 'interactive_feedback', arguments: { message: 'Which region?', predefinedOptions: ['eu', 'us'], wait: true } },
        undefined, { onprogress: () => {}, resetTimeoutOnProgress: true, timeout: 120000 });
      emit('result', structured(result));
      break;
    }
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
  await client.close();
  emit('done');
}

main().then(() => process.exit(0), (e) => {
  emit('error', { message: String(e?.message ?? e) });
  process.exit(1);
});
