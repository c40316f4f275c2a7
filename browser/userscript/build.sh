#!/bin/sh
# build.sh OUT — make the chatbridge LMArena userscript.
#
# OUT is, in order:
#   meta.js                      the ==UserScript== header
#   (function (globalThis) {     one wrapper: the script's own private globalThis
#   main.js's config section     the two placeholders nginx substitutes when it
#                                serves the file (__CHATBRIDGE_WS_URL__ and
#                                __CHATBRIDGE_TOKEN__), each exactly once
#   ../common/cb-protocol.js     the shared protocol client, unchanged
#   driver-lmarena.js            everything site-specific
#   the rest of main.js          the glue
#   })(<private globalThis>);
#
# cb-protocol.js and the driver publish themselves on `globalThis`; inside the
# wrapper that name is a small private object holding the few globals they
# read (WebSocket, setTimeout, clearTimeout), so nothing reaches the page's
# window. Checks: @version equals main.js's VERSION, each config marker
# appears in main.js exactly once (the start before the end), each
# placeholder appears once, and (when node is installed) the result parses.
# Nothing is left behind when it fails: OUT is written whole or not at all.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUT" >&2
    exit 2
fi

out=$1
here=$(cd "$(dirname "$0")" && pwd)
meta=$here/meta.js
proto=$here/../common/cb-protocol.js
driver=$here/driver-lmarena.js
main=$here/main.js
begin='// ==ChatbridgeConfig=='
end='// ==/ChatbridgeConfig=='
section='\%^// ==ChatbridgeConfig==$%,\%^// ==/ChatbridgeConfig==$%'
tmp=

cleanup() {
    [ -z "$tmp" ] || rm -f "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

die() {
    echo "$0: $*" >&2
    exit 1
}

for f in "$meta" "$proto" "$driver" "$main"; do
    [ -r "$f" ] || die "cannot read $f"
done

version=$(sed -n 's|^// @version[ 	]*\([^ 	]*\).*|\1|p' "$meta")
[ -n "$version" ] || die "no @version in meta.js"
grep -q -F "const VERSION = '$version';" "$main" \
    || die "main.js VERSION is not @version $version"

# the config section: one start marker, one end marker, in that order
for m in "$begin" "$end"; do
    n=$(grep -c -x -F "$m" "$main" || true)
    [ "$n" -eq 1 ] || die "main.js has the line '$m' $n times (want 1)"
done
first=$(grep -n -x -F "$begin" "$main" | cut -d: -f1)
last=$(grep -n -x -F "$end" "$main" | cut -d: -f1)
[ "$first" -lt "$last" ] || die "main.js: '$end' comes before '$begin'"

mkdir -p "$(dirname "$out")"
tmp=$out.tmp.$$

{
    cat "$meta"
    printf '\n(function (globalThis) {\n'
    printf "'use strict';\n\n"
    sed -n "${section}p" "$main"
    printf '\n'
    cat "$proto"
    printf '\n'
    cat "$driver"
    printf '\n'
    sed "${section}d" "$main"
    printf '\n})({\n'
    printf '  WebSocket: window.WebSocket,\n'
    printf '  setTimeout: function (fn, ms) { return window.setTimeout(fn, ms); },\n'
    printf '  clearTimeout: function (h) { window.clearTimeout(h); },\n'
    printf '});\n'
} > "$tmp"

for p in __CHATBRIDGE_WS_URL__ __CHATBRIDGE_TOKEN__; do
    n=$(grep -o -F "$p" "$tmp" | wc -l)
    [ "$n" -eq 1 ] || die "$p appears $n times (want 1)"
done
grep -q '^// ==/UserScript==$' "$tmp" || die "no userscript header"

if command -v node >/dev/null 2>&1; then
    node --check < "$tmp" || die "the result does not parse"
fi

mv "$tmp" "$out"
tmp=
