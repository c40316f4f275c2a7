#!/usr/bin/env bash
# setup.sh: install the real SillyTavern 1.19.0 from npm for the sillytavern
# test tier, into a cache outside the repository, and print its directory.
#
#   t/sillytavern/setup.sh          install if missing, print the directory
#
# Where:  $CB_ST_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/chatbridge
#           sillytavern-1.19.0/   the server (npm pack + npm install inside it,
#                                 so its dependencies stay under the server
#                                 directory and its own "overrides" apply)
#           npm/                  npm's cache, so a reinstall is offline
#
# A finished install carries a stamp file; without it the directory is
# rebuilt from scratch (an interrupted install is never reused). The install
# happens in a temporary directory beside the final one and is renamed into
# place, under a lock, so two runs at once do not step on each other.
# npm runs with --prefer-offline: cold it downloads about 200 MB (a minute or
# two), warm this script returns at once.

set -euo pipefail

version=1.19.0
cache=${CB_ST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chatbridge}
dir=$cache/sillytavern-$version
stamp=$dir/.chatbridge-installed
npm_cache=$cache/npm

if [ -f "$stamp" ]; then
    echo "$dir"
    exit 0
fi

command -v npm >/dev/null || { echo "$0: npm is required" >&2; exit 1; }
mkdir -p "$cache" "$npm_cache"

exec 9>"$cache/.lock"
flock 9
if [ -f "$stamp" ]; then            # another run finished it meanwhile
    echo "$dir"
    exit 0
fi

tmp=$(mktemp -d "$cache/.install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

npm_opts=(--cache "$npm_cache" --prefer-offline --no-audit --no-fund
          --loglevel=error --update-notifier=false)

echo "setup: installing sillytavern@$version into $dir" >&2
(
    cd "$tmp"
    npm pack "sillytavern@$version" "${npm_opts[@]}" >/dev/null
    tar xzf "sillytavern-$version.tgz"
    rm "sillytavern-$version.tgz"
    cd package
    npm install --omit=dev "${npm_opts[@]}" >&2
) || { echo "$0: npm failed" >&2; exit 1; }

[ -f "$tmp/package/server.js" ] \
    || { echo "$0: no server.js in the package" >&2; exit 1; }

rm -rf "$dir"
mv "$tmp/package" "$dir"
date -u +%FT%TZ > "$stamp"
echo "$dir"
