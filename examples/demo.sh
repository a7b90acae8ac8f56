#!/usr/bin/env bash
# `npm run demo`: same set-up as the test suite (ZooKeeper, Redis, node_modules), build, then run
# examples/demo.ts. Ctrl-C stops every server it started and exits 0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash test/run.sh --setup-only
npm run build
exec node dist/examples/demo.js "$@"
