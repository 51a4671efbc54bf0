#!/usr/bin/env bash
# Checks the API against its own OpenAPI document with schemathesis: every
# operation of /openapi.json is called with generated valid and invalid
# requests, authenticated, and every answer must be a documented status with
# a documented content type, headers and body, never a 5xx.
#
# It builds and starts the `api` binary on a free port, with a database of its
# own (created here, dropped on exit) and a Redis key prefix of its own, then
# creates a tenant with an API key, a user JWT and a platform admin JWT; which
# credential each path gets is in .ci/schemathesis.toml.
#
# Environment (all optional):
#   SCHEMATHESIS_SEED          replay a run with this seed (printed each run;
#                              fixed under CI=true, random otherwise)
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 50)
#   SCHEMATHESIS_VENV          where schemathesis is installed when `st` is not
#                              the pinned version (default target/schemathesis-venv)
#   SCHEMATHESIS_CONFIG        another config file (default .ci/schemathesis.toml)
#   API_BIN                    a prebuilt api binary (default: cargo build)
# Extra arguments go to `st run` (e.g. --include-path-regex '/inbox').
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source .ci/services.sh
ensure_services

ST_VERSION=4.32.5
say() { printf '==> %s\n' "$*" >&2; }

# schemathesis, pinned: the version on PATH when it is the pinned one,
# otherwise a virtualenv of our own.
ST=st
if ! st --version 2>/dev/null | grep -qx "st, version $ST_VERSION"; then
  VENV="${SCHEMATHESIS_VENV:-$ROOT/target/schemathesis-venv}"
  ST="$VENV/bin/st"
  if ! "$ST" --version 2>/dev/null | grep -qx "st, version $ST_VERSION"; then
    say "installing schemathesis $ST_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
  fi
fi

if [ -z "${API_BIN:-}" ]; then
  say "building the api"
  cargo build --quiet -p api --bin api
  API_BIN="$ROOT/target/debug/api"
fi

RUN_ID="$(date +%s)$$"
DB_NAME="notify_schemathesis_$RUN_ID"
WORK=$(mktemp -d)
API_PID=""
cleanup() {
  local rc=$?
  if [ -n "$API_PID" ]; then
    kill "$API_PID" 2>/dev/null || true
    wait "$API_PID" 2>/dev/null || true
  fi
  if command -v psql >/dev/null; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists $DB_NAME with (force)" >/dev/null 2>&1 || true
  fi
  if command -v redis-cli >/dev/null; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" --scan --pattern "st$RUN_ID*" \
      | xargs -r -n 500 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" del >/dev/null 2>&1 || true
  fi
  if [ $rc -ne 0 ] && [ -s "$WORK/api.log" ]; then
    say "the api's warnings and errors:"
    grep -E '"level":"(WARN|ERROR)"|WARN|ERROR' "$WORK/api.log" | tail -n 40 >&2 || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

# Databases left by an interrupted earlier run.
if command -v psql >/dev/null; then
  psql -h 127.0.0.1 -U postgres -d postgres -Atqc \
    "select 'drop database if exists ' || quote_ident(datname) || ' with (force);' from pg_database where datname like 'notify\_schemathesis\_%'" \
    | psql -h 127.0.0.1 -U postgres -d postgres -q >/dev/null 2>&1 || true
fi

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export REDIS_PREFIX="st$RUN_ID"
export API_ADDR="127.0.0.1:$PORT"
export JOBS_FILE="$ROOT/jobs.toml"
export MAIL_DIR="$WORK/mail"
export DATABASE_MAX_CONNECTIONS=10
export ENCRYPTION_KEYS="st:$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')"
export ENCRYPTION_KEY_ID=st
export LOG_FORMAT=json
export RUST_LOG=warn
# The document is checked here, not the rate limits
# (system-tests/tests/it/http/rate_limits.rs does): schemathesis fires far
# faster than any caller may.
for class in SEND READ WRITE UPLOAD AUTH CALLBACK; do
  export "JOBS__RATE_LIMITS__${class}__PER_SEC=1000000" "JOBS__RATE_LIMITS__${class}__BURST=1000000"
done
unset SMTP_URL PUBLIC_BASE_URL JWT_JWKS_URL JWT_ISSUER JWT_AUDIENCE

value() { sed -n "s/^$1=//p"; }

say "database $DB_NAME, Redis prefix $REDIS_PREFIX, api on $API_ADDR"
"$API_BIN" migrate >/dev/null
tenant_out=$("$API_BIN" tenant create --name "Schemathesis Clinic")
TENANT_ID=$(value tenant_id <<<"$tenant_out")
export ST_API_KEY=$(value api_key <<<"$tenant_out")
TENANT_SECRET=$("$API_BIN" tenant jwt-secret --tenant "$TENANT_ID" | value jwt_secret)
admin_out=$(PLATFORM_ADMIN_PASSWORD="Schemathesis-$RUN_ID" \
  "$API_BIN" platform-admin --email "platform.admin@example.org")
PLATFORM_ID=$(value platform_organization_id <<<"$admin_out")
PLATFORM_SECRET=$("$API_BIN" tenant jwt-secret --tenant "$PLATFORM_ID" | value jwt_secret)

# HS256 tokens signed with the tenants' secrets, valid for an hour. The
# subjects are no platform user's id, so no temporary password applies.
jwt() {
  python3 - "$1" "$2" "$3" "$4" <<'EOF'
import base64, hashlib, hmac, json, sys, time
secret, tenant, sub, roles = sys.argv[1:5]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
now = int(time.time())
claims = {"sub": sub, "tenant_id": tenant, "iat": now - 5, "exp": now + 3600,
          "roles": [r for r in roles.split(",") if r]}
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps(claims).encode())
sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(sig)}")
EOF
}
export ST_USER_JWT=$(jwt "$TENANT_SECRET" "$TENANT_ID" "st-patient-1" "")
export ST_ADMIN_JWT=$(jwt "$PLATFORM_SECRET" "$PLATFORM_ID" "st-platform-admin" "ADMIN")

"$API_BIN" >"$WORK/api.log" 2>&1 &
API_PID=$!
for _ in $(seq 1 100); do
  port_open "$PORT" && break
  kill -0 "$API_PID" 2>/dev/null || { cat "$WORK/api.log" >&2; say "the api exited"; exit 1; }
  sleep 0.2
done

# CI gates on one fixed seed, so a submission is judged the same way every
# time; a run by hand draws a new seed and so explores new cases.
if [ -n "${CI:-}" ]; then
  DEFAULT_SEED=20261204
else
  DEFAULT_SEED=$(python3 -c 'import random; print(random.randrange(2**31))')
fi
SEED="${SCHEMATHESIS_SEED:-$DEFAULT_SEED}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-50}"
say "schemathesis $ST_VERSION: seed $SEED, $MAX_EXAMPLES examples per operation and phase"
say "replay with: SCHEMATHESIS_SEED=$SEED SCHEMATHESIS_MAX_EXAMPLES=$MAX_EXAMPLES .ci/schemathesis.sh"
run_st() {
  "$ST" --config-file "${SCHEMATHESIS_CONFIG:-$ROOT/.ci/schemathesis.toml}" run "http://$API_ADDR/openapi.json" \
    --seed "$SEED" --max-examples "$MAX_EXAMPLES" --no-color "$@"
}
set +e
rc=0
if [ $# -gt 0 ]; then
  run_st "$@" || rc=$?
else
  # Operations that can switch the tenant off (and with it every credential
  # the rest of the run uses) run last, on their own.
  last=(organizations.update organizations.deactivate)
  run_st "${last[@]/#/--exclude-operation-id=}" || rc=$?
  run_st "${last[@]/#/--include-operation-id=}" || rc=$?
fi
set -e
if [ $rc -ne 0 ]; then
  say "schemathesis failed (exit $rc); replay with SCHEMATHESIS_SEED=$SEED SCHEMATHESIS_MAX_EXAMPLES=$MAX_EXAMPLES .ci/schemathesis.sh"
fi
exit $rc
