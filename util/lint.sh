#!/usr/bin/env bash
# make lint: the style rules a reviewer would otherwise repeat.
#   - C and C++: 80 columns, spaces not tabs, no trailing blanks
#   - no leftover debug switches (#if 0, DDEBUG 1, printf in the module,
#     console.log in browser scripts)
#   - shellcheck on the scripts, perl -c on the tests

set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

bad=0
say() { echo "lint: $*"; bad=1; }

c_files=$(ls common/*.[ch] ngx_chatbridge_module/*.[ch] lws-sidecar/*.{cc,h} \
          2>/dev/null)

# columns are characters, not bytes
for f in $c_files; do
    perl -CSD -ne '
        if (length($_) - 1 > 80) { printf "lint: %s:%d: %d columns\n",
                                           $ARGV, $., length($_) - 1; $bad = 1 }
        if (/\t/) { print "lint: $ARGV:$.: tab\n"; $bad = 1 }
        if (/[ \t]+\n$/) { print "lint: $ARGV:$.: trailing blank\n"; $bad = 1 }
        END { exit($bad ? 1 : 0) }' "$f" || bad=1
done

if grep -nE '^#if 0|DDEBUG 1' $c_files; then
    say "leftover debug switches (above)"
fi

if grep -nE '\bprintf\(' ngx_chatbridge_module/ngx_http_*.c; then
    say "printf in the nginx module: use ngx_log_error"
fi

if grep -nE '^\s*console\.(log|debug)\(' browser/*/*.js 2>/dev/null; then
    say "console.log in a browser script: use the client's log option"
fi

if command -v shellcheck >/dev/null; then
    shellcheck -S warning util/*.sh .ci/run packaging/build-deb.sh \
        browser/*/build.sh bench/run.sh t/sillytavern/setup.sh || bad=1
    shellcheck -S warning -s sh packaging/*/postinst packaging/*/prerm \
        packaging/*/postrm || bad=1
else
    say "shellcheck is missing: apt-get install shellcheck"
fi

# a test must compile without a warning ("my" masking another, say)
for t in t/*.t; do
    out=$(perl -It/lib -c "$t" 2>&1)
    if [ "$out" != "$t syntax OK" ]; then
        say "$t: $out"
    fi
done

[ "$bad" = 0 ] && echo "lint: clean"
exit "$bad"
