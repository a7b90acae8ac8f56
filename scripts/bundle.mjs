// The shipped daemon: src/main.ts and everything it imports (effect, ioredis, the ZooKeeper
// client) in one tree-shaken, minified CommonJS file, dist/dictator.cjs (the `dictator` bin).
// One file is parsed once instead of ~700 ESM modules resolved and linked at start: less memory
// (see README "Footprint"). Names are kept so stack traces and Effect spans stay readable.
import { fileURLToPath } from "node:url"
import { build } from "esbuild"

/** Packages the daemon never runs, replaced by scripts/absent.cjs (see there). */
const leftOut = /^(undici|ws)$/
const absent = fileURLToPath(new URL("./absent.cjs", import.meta.url))

await build({
  entryPoints: ["src/main.ts"],
  outfile: "dist/dictator.cjs",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "cjs",
  minify: true,
  keepNames: true,
  legalComments: "linked",
  logLevel: "warning",
  plugins: [{ name: "left-out", setup: (b) => b.onResolve({ filter: leftOut }, () => ({ path: absent })) }]
})
