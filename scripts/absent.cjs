// Stands in for the npm packages `undici` and `ws` in the bundle (scripts/bundle.mjs).
// @effect/platform-node's HTTP server module imports them for its HTTP client and WebSocket
// upgrades, which the dictator never uses; evaluated at start they cost ~10 MB of RSS (undici also
// pulls in Node's own fetch implementation). Asked for anything, this says so instead of
// failing obscurely.
module.exports = new Proxy(
  {},
  {
    get(_target, key) {
      if (typeof key === "symbol" || key === "__esModule" || key === "then") return undefined
      throw new Error(`dictator bundle: the npm packages undici and ws are left out (never used by the daemon), yet "${String(key)}" was asked for`)
    }
  }
)
