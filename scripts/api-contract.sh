#!/usr/bin/env bash
# The HTTP contract, checked from outside: schemathesis generates requests from the api's own
# OpenAPI document (GET /v1/openapi.json) against a running sa-api (its own database and queue
# prefix, no worker: nothing it queues runs), and fails on any 5xx or any response that does not
# match its schema. Bounded: SA_CONTRACT_EXAMPLES (20) examples per operation, 150 s of generation at most.
# It authenticates with the admin token the api writes on its first start; revoking tokens is
# left out (a revoked admin token would end the run early).
# Needs the debug binaries (cargo build --bins) and schemathesis (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-/var/cache/serveractions/target}/debug"
tag="contract_$$"
port=$((20000 + $$ % 20000))
out=$(mktemp -d)
export SA_DATABASE_URL="postgres://postgres@127.0.0.1:5432/sa_$tag" SA_LISTEN="127.0.0.1:$port" \
  SA_QUEUE_PREFIX="sa-$tag" SA_ADMIN_TOKEN_FILE="$out/admin-token" RUST_LOG=warn
"$bin/sa-api" >"$out/api.log" 2>&1 &
api=$!
cleanup() {
  kill "$api" 2>/dev/null || true
  wait "$api" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d postgres -q -c "DROP DATABASE IF EXISTS sa_$tag WITH (FORCE)" >/dev/null 2>&1 || true
  for q in "sa-$tag.actions" "sa-$tag.actions.dead"; do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
  rm -rf "$out"
}
trap cleanup EXIT
for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$out/api.log" >&2; echo "api-contract: sa-api did not start" >&2; exit 1; }
token=$(cat "$out/admin-token")
timeout 600 schemathesis run "http://127.0.0.1:$port/v1/openapi.json" \
  -H "Authorization: Bearer $token" --exclude-path '/v1/tokens/{name}' \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "${SA_CONTRACT_EXAMPLES:-20}" --max-time 150 --report-dir "$out" "$@" \
  || { echo "api-contract: failed; the api's log:" >&2; tail -n 50 "$out/api.log" >&2; exit 1; }
