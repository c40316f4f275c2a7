#!/usr/bin/env bash
# make run: start chatbridge-sidecar and Debian's nginx with the module, in
# the foreground, on 127.0.0.1:$PORT, from a private runtime folder (run/).
# Ctrl-C stops both.

set -euo pipefail

port=${1:-5102}
top=$(cd "$(dirname "$0")/.." && pwd)
rt=${CHATBRIDGE_RUNTIME:-$top/run}
module=$top/build/nginx/ngx_http_chatbridge_module.so
sidecar=$top/build/chatbridge-sidecar

case "$port" in
    ''|*[!0-9]*) echo "PORT must be a number" >&2; exit 2 ;;
esac

mkdir -p "$rt/logs" "$rt/tmp"
chmod 755 "$rt"
chmod 1777 "$rt/tmp"

# one browser token per runtime folder, kept across runs
if [ ! -s "$rt/token" ]; then
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$rt/token"
    chmod 600 "$rt/token"
fi
token=$(cat "$rt/token")

# as root, nginx workers run as nobody: give them the sockets' group
user_line=""
group_args=()
if [ "$(id -u)" = 0 ]; then
    user_line="user nobody nogroup;"
    group_args=(--control-group nogroup)
fi

keys=""
if [ -n "${API_KEY:-}" ]; then
    keys="chatbridge_api_key default $API_KEY;"
fi

sed -e "s|@MODULE@|$module|g" -e "s|@RUNTIME@|$rt|g" -e "s|@PORT@|$port|g" \
    -e "s|@USER@|$user_line|g" -e "s|@API_KEYS@|$keys|g" \
    "$top/nginx-conf/local.conf" > "$rt/nginx.conf"

if ! /usr/sbin/nginx -t -q -p "$rt" -c "$rt/nginx.conf" -e stderr; then
    echo "make run: the generated nginx configuration does not pass" \
         "nginx -t" >&2
    exit 1
fi

pids=()
stop() {
    trap - INT TERM EXIT
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    echo
    echo "chatbridge stopped."
}
trap stop INT TERM EXIT

"$sidecar" --control "$rt/sidecar.sock" --listen "unix:$rt/ws.sock" \
    --token-file "$rt/token" "${group_args[@]}" \
    2>> "$rt/logs/sidecar.log" &
pids+=($!)
echo "$!" > "$rt/sidecar.pid"

for _ in $(seq 50); do
    [ -S "$rt/sidecar.sock" ] && break
    if ! kill -0 "${pids[0]}" 2>/dev/null; then
        echo "make run: the sidecar did not start:" >&2
        tail -5 "$rt/logs/sidecar.log" >&2
        exit 1
    fi
    sleep 0.1
done

/usr/sbin/nginx -p "$rt" -c "$rt/nginx.conf" -e "$rt/logs/error.log" &
pids+=($!)

for _ in $(seq 50); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/v1/models"; then
        break
    fi
    if ! kill -0 "${pids[1]}" 2>/dev/null; then
        echo "make run: nginx did not start:" >&2
        tail -5 "$rt/logs/error.log" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<MSG

chatbridge is running on 127.0.0.1:$port

  OpenAI base URL    http://127.0.0.1:$port/v1
  API key            ${API_KEY:+the one in API_KEY}${API_KEY:-none required (set API_KEY=... to require one)}
  Browser WebSocket  ws://127.0.0.1:$port/chatbridge/ws
  Browser token      $token
  Status             http://127.0.0.1:$port/chatbridge/status

Next: connect a browser (see README, "Connect a browser"), then
  curl http://127.0.0.1:$port/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model":"any","messages":[{"role":"user","content":"Hello"}]}'

Logs: $rt/logs/. Ctrl-C stops nginx and the sidecar.
MSG

# whichever ends first ends both
wait -n "${pids[@]}" || true
