#!/usr/bin/env bash
# Makes sure Postgres (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379)
# answer. Sourced by .ci/up, .ci/test and .ci/run.
#
# Whatever already answers is used as it is. Otherwise, in order:
#   1. docker compose starts the postgres and redis services, where a Docker
#      engine runs;
#   2. locally installed server binaries are started on a project-local data
#      folder (var/), after installing them with apt-get when they are missing.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="${VAR:-$ROOT/var}"
PG_PORT="${PG_PORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"

say() { printf '==> %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 0.5
  done
  say "$name did not come up on port $port"
  return 1
}

apt_install() {
  command -v apt-get >/dev/null || { say "cannot install $*: no apt-get here; install it yourself"; return 1; }
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing $* with apt-get"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

docker_engine() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

start_postgres_locally() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
  if [ -z "$bin" ]; then
    apt_install postgresql || return 1
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  fi
  local data="$VAR/postgres" run=()
  # initdb and postgres refuse to run as root.
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    run=(runuser -u postgres --)
  fi
  mkdir -p "$VAR"
  if [ ! -s "$data/PG_VERSION" ]; then
    say "creating a Postgres cluster in $data"
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres "$data"
    "${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
  fi
  [ "$(id -u)" -eq 0 ] && chown -R postgres "$data"
  say "starting Postgres from $bin on 127.0.0.1:$PG_PORT"
  "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=/tmp -c max_connections=300" start >/dev/null
}

start_redis_locally() {
  command -v redis-server >/dev/null || apt_install redis-server || return 1
  mkdir -p "$VAR/redis"
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$VAR/redis" --logfile "$VAR/redis/redis.log"
}

ensure_services() {
  local need=()
  port_open "$PG_PORT" || need+=(postgres)
  port_open "$REDIS_PORT" || need+=(redis)
  [ ${#need[@]} -eq 0 ] && return 0
  if docker_engine; then
    say "starting ${need[*]} with docker compose"
    docker compose -f "$ROOT/docker-compose.yml" up -d "${need[@]}"
  else
    for s in "${need[@]}"; do
      case $s in
        postgres) start_postgres_locally ;;
        redis) start_redis_locally ;;
      esac
    done
  fi
  wait_port "$PG_PORT" Postgres && wait_port "$REDIS_PORT" Redis
}
