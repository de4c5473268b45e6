// The MCP Apps test host (e2e/apps_test.go). It is a host as the MCP Apps
// spec describes one, built on the official parts: the TypeScript SDK's
// Client over Streamable HTTP to the real Caddy, and ext-apps' AppBridge +
// PostMessageTransport towards the view in a sandboxed iframe. esbuild
// bundles it for headless Chromium at test time; the test drives it
// through window.appsHost and reads what it records.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { AppBridge, PostMessageTransport, RESOURCE_MIME_TYPE } from "@modelcontextprotocol/ext-apps/app-bridge";

const UI = "io.modelcontextprotocol/ui";

const state = {
  calls: [],      // the view's tools/call requests: {name, isError, text}
  strays: [],     // anything else posted to this window: must stay empty
  agent: null,    // the waiting get_feedback_result call's result
  openLinks: [],
  modelContext: [], // ui/update-model-context requests from the view
};
window.appsHostState = state;

// Whatever the view (or an injection in it) posts that is not JSON-RPC.
window.addEventListener("message", (ev) => {
  const d = ev.data;
  if (!d || typeof d !== "object" || d.jsonrpc !== "2.0") state.strays.push(String(typeof d === "object" ? JSON.stringify(d) : d));
});

function textOf(res) {
  return (res.content || []).filter((c) => c.type === "text").map((c) => c.text).join("");
}

async function connect(token, apps) {
  const capabilities = apps ? { extensions: { [UI]: { mimeTypes: [RESOURCE_MIME_TYPE] } } } : {};
  const client = new Client({ name: "apps-e2e-host", version: "1.0.0" }, { capabilities });
  const transport = new StreamableHTTPClientTransport(new URL("/mcp", location.origin), {
    requestInit: { headers: { Authorization: "Bearer " + token } },
  });
  await client.connect(transport);
  return client;
}

// run: the agent asks (args), the host renders the view if the tool names
// one, hands it input and result, and the agent then waits for the answer.
// It resolves with what the test checks before clicking.
window.appsHost = {
  async run({ token, apps, args, hostContext }) {
    const client = await connect(token, apps);
    const advertised = !!(client.getServerCapabilities()?.extensions || {})[UI];
    const { tools } = await client.listTools();
    const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
    const visibility = (t) => t._meta?.ui?.visibility || ["model", "app"];
    // What a host would put in front of the model.
    const modelTools = tools.filter((t) => visibility(t).includes("model")).map((t) => t.name).sort();
    const uri = byName.interactive_feedback?._meta?.ui?.resourceUri || "";
    const out = { advertised, modelTools, allTools: tools.map((t) => t.name).sort(), uri };

    if (!uri || !apps) {
      const res = await client.callTool({ name: "interactive_feedback", arguments: args });
      return { ...out, result: res };
    }

    const read = await client.readResource({ uri });
    const content = read.contents[0];
    out.mimeType = content.mimeType;
    out.resourceMeta = content._meta || null;

    const iframe = document.createElement("iframe");
    // As the spec asks of the view's frame: scripts, but no same-origin
    // (the view cannot reach this page, its storage or the server).
    iframe.setAttribute("sandbox", "allow-scripts");
    iframe.id = "view";
    iframe.style.width = "600px";
    iframe.style.height = "700px";
    document.body.appendChild(iframe);

    const bridge = new AppBridge(null, { name: "apps-e2e-host", version: "1.0.0" },
      { serverTools: {}, openLinks: {}, updateModelContext: { text: {} } }, { hostContext });
    // The host enforces visibility: the view may call only tools that
    // include "app". The server must still check everything itself.
    bridge.oncalltool = async (params) => {
      const tool = byName[params.name];
      if (!tool || !visibility(tool).includes("app")) throw new Error("tool not available to the view: " + params.name);
      const res = await client.callTool(params);
      state.calls.push({ name: params.name, isError: !!res.isError, text: textOf(res) });
      return res;
    };
    bridge.onopenlink = async ({ url }) => { state.openLinks.push(url); return {}; };
    bridge.onupdatemodelcontext = async (params) => { state.modelContext.push(params); return {}; };
    const initialized = new Promise((resolve) => { bridge.oninitialized = resolve; });
    // Connect before srcdoc: the view's ui/initialize comes as soon as its
    // script runs.
    await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
    iframe.srcdoc = content.text;
    await initialized;
    bridge.sendToolInput({ arguments: args });

    const result = await client.callTool({ name: "interactive_feedback", arguments: args });
    await bridge.sendToolResult(result);
    out.result = result;
    if (!result.isError) {
      // The agent goes on waiting for the answer, as the result tells it to.
      client.callTool({ name: "get_feedback_result", arguments: { sessionId: result.structuredContent.sessionId, wait: 120 } },
        undefined, { timeout: 180000 })
        .then((r) => { state.agent = r; }, (e) => { state.agent = { error: String(e) }; });
    }
    window.appsHostBridge = bridge;
    window.appsHostClient = client;
    return out;
  },

  // callAsView sends a tools/call the way the view's bridge would, for the
  // forged-capability cases: straight through the host's client.
  async callAsView(name, args) {
    const res = await window.appsHostClient.callTool({ name, arguments: args });
    return { isError: !!res.isError, text: textOf(res), structured: res.structuredContent || null };
  },
};
