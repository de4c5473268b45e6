// Richer questions through a real MCP client (the official TypeScript SDK),
// driven by TestMCPRicherQuestions (e2e/questions_test.go) with client.mjs's
// protocol: one JSON object per line on stdout.
//
//   node questions.mjs http <url> <scenario>
//
// scenario: choose (onTimeout choose, nobody answers) | form (a form of
// questions answered over REST by the Go side) | form-elicit (the same
// form answered in this client's own form elicitation) | image (an MCP
// image content block passed on to the person) | attachments (a question
// whose answer carries the person's files: images come back as image
// content, other files as resource links that this client downloads with
// its own bearer token).
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import { createHash } from 'node:crypto';

const [kind, url, scenario] = process.argv.slice(2);
const token = process.env.MCP_TOKEN;
if (kind !== 'http' || !url || !scenario || !token) {
  console.error('usage: MCP_TOKEN=... node questions.mjs http <url> <choose|form|form-elicit>');
  process.exit(2);
}

const emit = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
const structured = (res) => ({ isError: !!res.isError, structured: res.structuredContent ?? null, text: (res.content ?? []).map((c) => c.text).join('\n') });

// The form every form scenario asks: one question of each kind.
const questions = [
  { id: 'env', message: 'Deploy where?', kind: 'single', required: true, options: [{ label: 'prod', description: 'All customers' }, 'staging'] },
  { id: 'checks', message: 'Which checks ran?', kind: 'multi', options: ['unit', 'e2e', 'load'] },
  { id: 'note', message: 'Anything for the changelog?', kind: 'text' },
  { id: 'ok', message: 'Migrations reviewed?', kind: 'boolean', required: true },
  { id: 'count', message: 'How many canaries?', kind: 'number', min: 1, max: 10, required: true },
];

const eliciting = scenario === 'form-elicit';
const client = new Client({ name: 'mcpfeedback-e2e-questions', version: '1.0.0' },
  { capabilities: eliciting ? { elicitation: { form: {} } } : {} });
if (eliciting) {
  // The person fills the client's own form: a value of each field's type,
  // read from the schema the server asked with.
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    emit('elicitation', { params: req.params });
    const content = {};
    for (const [name, p] of Object.entries(req.params.requestedSchema.properties)) {
      if (p.enum) content[name] = p.enum[p.enum.length - 1];
      else if (p.type === 'array') content[name] = [p.items.enum[0], p.items.enum[2]];
      else if (p.type === 'boolean') content[name] = true;
      else if (p.type === 'number' || p.type === 'integer') content[name] = p.maximum ?? 4;
      else if (name === 'comment') content[name] = 'sent from the client form';
      else content[name] = 'typed in the client';
    }
    return { action: 'accept', content };
  });
}

const long = { onprogress: () => {}, resetTimeoutOnProgress: true, timeout: 120000 };

async function main() {
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }));
  emit('connected');
  switch (scenario) {
    case 'choose': {
      // A timeout below the minimum is moved into the range, with a warning.
      const result = await client.callTool({ name: 'interactive_feedback', arguments: {
        message: 'Roll back if nobody objects?', predefinedOptions: ['roll back', 'keep'], timeout: 0,
        onTimeout: { action: 'choose', option: 'roll back' }, wait: true } }, undefined, long);
      emit('result', structured(result));
      break;
    }
    case 'form': {
      const created = await client.callTool({ name: 'interactive_feedback', arguments: { message: 'Release 2.4', questions } });
      emit('created', structured(created));
      const result = await client.callTool({ name: 'get_feedback_result', arguments: { sessionId: created.structuredContent.sessionId, wait: 60 } }, undefined, long);
      emit('result', structured(result));
      break;
    }
    case 'form-elicit': {
      const result = await client.callTool({ name: 'interactive_feedback', arguments: { message: 'Release 2.4', questions, wait: true } }, undefined, long);
      emit('result', structured(result));
      break;
    }
    case 'image': {
      // A 1×1 PNG as an MCP image content block, passed on as it is.
      const png = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';
      const created = await client.callTool({ name: 'interactive_feedback', arguments: {
        message: 'Is this pixel blue enough?', predefinedOptions: ['yes', 'no'],
        images: [{ type: 'image', data: png, mimeType: 'image/png' }] } });
      emit('created', { ...structured(created), png });
      break;
    }
    case 'attachments': {
      const created = await client.callTool({ name: 'interactive_feedback', arguments: { message: 'Paste a screenshot of the bug, and the report', allowFreeText: true } });
      emit('created', structured(created));
      const result = await client.callTool({ name: 'get_feedback_result', arguments: { sessionId: created.structuredContent.sessionId, wait: 110 } }, undefined, long);
      // Every content block as the SDK parsed it; each link followed with
      // this client's token, its bytes reported by hash.
      const blocks = [];
      for (const c of result.content ?? []) {
        if (c.type === 'image') blocks.push({ type: c.type, mimeType: c.mimeType, sha256: createHash('sha256').update(Buffer.from(c.data, 'base64')).digest('hex') });
        else if (c.type === 'resource_link') {
          const r = await fetch(c.uri, { headers: { Authorization: `Bearer ${token}` } });
          const body = Buffer.from(await r.arrayBuffer());
          blocks.push({ type: c.type, uri: c.uri, name: c.name, mimeType: c.mimeType, size: c.size, status: r.status,
            contentType: r.headers.get('content-type'), sha256: createHash('sha256').update(body).digest('hex') });
        } else blocks.push({ type: c.type, text: c.text });
      }
      emit('result', { ...structured(result), blocks });
      break;
    }
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
  await client.close();
  emit('done');
}

main().then(() => process.exit(0), (e) => {
  emit('error', { message: String(e?.stack ?? e) });
  process.exit(1);
});
