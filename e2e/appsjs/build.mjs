// Bundles the test host (host.js) for the browser: node build.mjs <outdir>.
// e2e/apps_test.go runs it before each run, so nothing built is committed.
import { build } from "esbuild";
import { copyFileSync } from "node:fs";
import { join } from "node:path";

const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs <outdir>");
  process.exit(2);
}
await build({
  entryPoints: [new URL("./host.js", import.meta.url).pathname],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "chrome120",
  outfile: join(out, "host.js"),
  logLevel: "warning",
});
copyFileSync(new URL("./index.html", import.meta.url).pathname, join(out, "index.html"));
