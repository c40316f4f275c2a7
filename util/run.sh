#!/usr/bin/env bash
# make run: start chatbridge-sidecar and Debian's nginx with the module, in
# the foreground, on 127.0.0.1:$PORT, from a private runtime folder (run/).
# Ctrl-C stops both.

set -euo pipefail

port=${1:-5102}
top=$(cd "$(dirname "$0")/.." && pwd)
rt=${CHATBRIDGE_RUNTIME:-$top/run}
# make's BUILD (make run passes it): relative to the top of the tree
build=${BUILD:-build}
case "$build" in
    /*) ;;
    *) build=$top/$build ;;
esac
module=$build/nginx/ngx_http_chatbridge_module.so
sidecar=$build/chatbridge-sidecar
userscript=$build/chatbridge.user.js

case "$port" in
    ''|*[!0-9]*) echo "PORT must be a number" >&2; exit 2 ;;
esac

# API_KEY and the paths go into nginx's configuration as they are: nothing
# in them may end a directive or start another (; { } space quotes # $ \)
if [ -n "${API_KEY:-}" ] && ! [[ "$API_KEY" =~ ^[A-Za-z0-9._~+=:-]+$ ]]; then
    echo "make run: API_KEY may hold only letters, digits and . _ ~ + = : -" \
         "(it is written into nginx's configuration)" >&2
    exit 2
fi
conf_safe() {    # WHAT VALUE
    if [[ "$2" =~ [[:space:]\;\{\}\"\'\#\$\\] ]]; then
        echo "make run: $1 \"$2\" holds a character nginx's configuration" \
             "would misread (space ; { } quotes # \$ \\)" >&2
        exit 2
    fi
}
conf_safe "the runtime folder" "$rt"
conf_safe "the build folder (BUILD)" "$build"

for f in "$module" "$sidecar" "$userscript"; do
    if [ ! -f "$f" ]; then
        echo "make run: $f is missing: run make (BUILD=$build)" >&2
        exit 1
    fi
done

mkdir -p "$rt/logs" "$rt/tmp"
chmod 755 "$rt"
chmod 1777 "$rt/tmp"

# one browser token per runtime folder, kept across runs
if [ ! -s "$rt/token" ]; then
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$rt/token"
    chmod 600 "$rt/token"
fi
token=$(cat "$rt/token")

# and one key for operator commands (bin/chatbridgectl reads it from here)
if [ ! -s "$rt/admin-key" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' \
        > "$rt/admin-key")
fi
admin_key=$(cat "$rt/admin-key")

# LMArena Bridge's files, when the user copied them in: ARENA=dir, or
# run/arena/ (config.jsonc, and models.json, model_endpoint_map.json)
arena_dir=${ARENA:-$rt/arena}
arena_line=""
arena_args=()
if [ -f "$arena_dir/config.jsonc" ]; then
    arena_dir=$(cd "$arena_dir" && pwd)
    conf_safe "the LMArena folder (ARENA)" "$arena_dir"
    arena_line="chatbridge_arena $arena_dir;"
    arena_args=(--state-dir "$arena_dir")
fi

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

# the generated configuration holds the admin key: for our eyes only.  The
# @NAMES@ are filled in from the environment, taken as plain text (no sed
# replacement syntax: & \ | in a value stay what they are)
(umask 077
 CBRUN_MODULE=$module CBRUN_RUNTIME=$rt CBRUN_PORT=$port CBRUN_USER=$user_line \
 CBRUN_API_KEYS=$keys CBRUN_ARENA=$arena_line CBRUN_USERSCRIPT=$userscript \
 CBRUN_ADMIN_KEY=$admin_key \
 perl -pe 's/\@([A-Z_]+)\@/exists $ENV{"CBRUN_$1"} ? $ENV{"CBRUN_$1"} : $&/ge' \
     "$top/nginx-conf/local.conf" > "$rt/nginx.conf")

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
    --token-file "$rt/token" "${group_args[@]}" "${arena_args[@]}" \
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

if [ -n "$arena_line" ]; then
    arena_state="$arena_dir (chatbridge_arena)"
else
    arena_state="none (copy config.jsonc, models.json and model_endpoint_map.json into $rt/arena/ to use them)"
fi

cat <<MSG

chatbridge is running on 127.0.0.1:$port

  OpenAI base URL    http://127.0.0.1:$port/v1
  API key            ${API_KEY:+the one in API_KEY}${API_KEY:-none required (set API_KEY=... to require one)}
  Browser WebSocket  ws://127.0.0.1:$port/chatbridge/ws
  Browser token      $token
  Userscript         http://127.0.0.1:$port/chatbridge/chatbridge.user.js
  Status             http://127.0.0.1:$port/chatbridge/status
  LMArena files      $arena_state

Next: connect a browser (see README, "Connect a browser"): for LMArena,
open the userscript URL in a browser with Tampermonkey, install it, and
open lmarena.ai; bin/chatbridgectl capture --model NAME takes session ids.
Then
  curl http://127.0.0.1:$port/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model":"any","messages":[{"role":"user","content":"Hello"}]}'

Logs: $rt/logs/. Ctrl-C stops nginx and the sidecar.
MSG

# whichever ends first ends both
wait -n "${pids[@]}" || true
