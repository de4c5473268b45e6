// MCP Tasks through the official TypeScript SDK's task API
// (client.experimental.tasks), driven by e2e/tasks_test.go. One JSON event
// per line on stdout; where the Go side must act (answer as the person,
// reload Caddy), the script waits for a line on stdin.
//
//   node tasks.mjs <scenario> <urlA> [urlB]
//
// The bearer token comes from MCP_TOKEN, another identity's from
// MCP_TOKEN_OTHER; never from argv.
//
// cluster: client A (urlA) calls interactive_feedback as a task and polls
//   it; client B (urlB, another Caddy on the same Redis, same identity)
//   sees the task in tasks/get and tasks/list, and reads tasks/result;
//   client C (urlB, other identity) sees nothing of it; B cancels a second
//   task of A's, and A's stream ends cancelled.
// reload: A creates a task, waits for the Go side to reload and then
//   restart Caddy, and its polling goes on to the result; a new client
//   (a reconnect) reads the task and its result too.
import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CallToolResultSchema } from '@modelcontextprotocol/sdk/types.js';

const [scenario, urlA, urlB] = process.argv.slice(2);
const token = process.env.MCP_TOKEN;
if (!scenario || !urlA || !token) {
  console.error('usage: MCP_TOKEN=... [MCP_TOKEN_OTHER=...] node tasks.mjs <cluster|reload> <urlA> [urlB]');
  process.exit(2);
}
const emit = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + '\n');
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const waitGo = async () => { const { done } = await lines.next(); if (done) throw new Error('stdin closed'); };

async function connect(url, tok, name) {
  const client = new Client({ name, version: '1.0.0' }, { capabilities: {} });
  await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${tok}` } } }));
  return client;
}

// ask starts a task-augmented call and returns its event iterator, the
// task and the answer link (from the first status message).
async function ask(client, message) {
  const stream = client.experimental.tasks.callToolStream(
    { name: 'interactive_feedback', arguments: { message, predefinedOptions: ['yes', 'no'] } },
    CallToolResultSchema, { task: { ttl: 600000 } });
  const it = stream[Symbol.asyncIterator]();
  let task, link;
  while (!link) {
    const { value: m, done } = await it.next();
    if (done) throw new Error('task stream ended before a status');
    if (m.type === 'error') throw m.error;
    if (m.type === 'taskCreated') task = m.task;
    if (m.type === 'taskStatus') {
      const found = /(https?:\/\/\S+) \(/.exec(m.task.statusMessage ?? '');
      if (!found) throw new Error(`no link in status ${JSON.stringify(m.task)}`);
      link = found[1];
    }
  }
  return { it, task, link };
}

// finish drains the stream to its result or error.
async function finish(it) {
  const statuses = [];
  for (;;) {
    const { value: m, done } = await it.next();
    if (done) return { statuses };
    if (m.type === 'taskStatus') statuses.push(m.task.status);
    if (m.type === 'result') return { statuses, result: m.result };
    if (m.type === 'error') return { statuses, error: m.error.message };
  }
}

const outcome = (r) => ({ status: r.structuredContent?.status, result: r.structuredContent?.result ?? null, related: r._meta?.['io.modelcontextprotocol/related-task']?.taskId ?? null });

async function main() {
  const a = await connect(urlA, token, 'tasks-a');
  switch (scenario) {
    case 'cluster': {
      const first = await ask(a, 'Deploy to production?');
      emit('task', { task: first.task, link: first.link });
      const b = await connect(urlB, token, 'tasks-b');
      const got = await b.experimental.tasks.getTask(first.task.taskId);
      const listed = await b.experimental.tasks.listTasks();
      emit('b-seen', { status: got.status, pollInterval: got.pollInterval ?? null, listed: listed.tasks.map((t) => t.taskId) });
      const c = await connect(urlB, process.env.MCP_TOKEN_OTHER, 'tasks-other');
      let otherGet = null;
      try { await c.experimental.tasks.getTask(first.task.taskId); } catch (e) { otherGet = e.message; }
      let otherResult = null;
      try { await c.experimental.tasks.getTaskResult(first.task.taskId, CallToolResultSchema); } catch (e) { otherResult = e.message; }
      const otherList = await c.experimental.tasks.listTasks();
      emit('other', { getError: otherGet, resultError: otherResult, listed: otherList.tasks.map((t) => t.taskId) });
      await waitGo(); // the person answers (through instance B)
      const end = await finish(first.it);
      emit('a-result', { statuses: end.statuses, error: end.error ?? null, ...(end.result ? outcome(end.result) : {}) });
      const fromB = await b.experimental.tasks.getTaskResult(first.task.taskId, CallToolResultSchema);
      emit('b-result', outcome(fromB));

      const second = await ask(a, 'Never mind?');
      const cancelled = await b.experimental.tasks.cancelTask(second.task.taskId);
      const end2 = await finish(second.it);
      emit('cancelled', { status: cancelled.status, streamError: end2.error ?? null, link: second.link });
      await Promise.all([b.close(), c.close()]);
      break;
    }
    case 'reload': {
      const t = await ask(a, 'Across a reload?');
      emit('task', { task: t.task, link: t.link });
      await waitGo(); // Caddy reloaded, restarted, then the person answered
      const end = await finish(t.it);
      emit('a-result', { statuses: end.statuses, error: end.error ?? null, ...(end.result ? outcome(end.result) : {}) });
      // A new client (a reconnect) of the same identity reads it too.
      const again = await connect(urlA, token, 'tasks-reconnected');
      const got = await again.experimental.tasks.getTask(t.task.taskId);
      const res = await again.experimental.tasks.getTaskResult(t.task.taskId, CallToolResultSchema);
      emit('reconnected', { taskStatus: got.status, ...outcome(res) });
      await again.close();
      break;
    }
    default: throw new Error(`unknown scenario ${scenario}`);
  }
  await a.close();
  emit('done');
  process.exit(0); // stdin's reader would keep the process alive
}

main().catch((e) => { emit('error', { message: String(e?.stack ?? e) }); process.exit(1); });
