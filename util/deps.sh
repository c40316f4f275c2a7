#!/usr/bin/env bash
# Install what a tier needs from Debian's packages.
#
#   util/deps.sh run     build and run: nginx, nginx-dev, libwebsockets, jansson
#   util/deps.sh deb     the above, plus dpkg-dev (make deb)
#   util/deps.sh test    run and deb, plus Check, Perl test modules, Node.js,
#                        Chromium, lintian (t/160-deb.t checks the packages),
#                        the linter for make lint, taskset (the bench's smoke)
#   util/deps.sh bench   the same
#
# As root, missing packages are installed with apt-get (services are kept from
# starting during the install, so Debian's nginx does not take port 80).
# Otherwise the exact command is printed and the script fails.

set -euo pipefail

tier=${1:-run}

run_pkgs=(nginx nginx-dev libwebsockets-dev libjansson-dev pkg-config
          build-essential ca-certificates curl)
deb_pkgs=(dpkg-dev binutils)
lint_pkgs=(lintian shellcheck)
test_pkgs=(check perl openssl chromium libio-socket-ssl-perl git)
bench_pkgs=(util-linux)   # taskset

case "$tier" in
    run)   want=("${run_pkgs[@]}") ;;
    deb)   want=("${run_pkgs[@]}" "${deb_pkgs[@]}") ;;
    test)  want=("${run_pkgs[@]}" "${deb_pkgs[@]}" "${lint_pkgs[@]}"
                 "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
    bench) want=("${run_pkgs[@]}" "${deb_pkgs[@]}" "${lint_pkgs[@]}"
                 "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
    *)     echo "usage: $0 run|deb|test|bench" >&2; exit 2 ;;
esac

# Node.js: any install that provides node >= 18 and npm will do (Debian's
# nodejs + npm, or one that is already there).
need_node=0
if [ "$tier" != run ] && [ "$tier" != deb ]; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        need_node=1
    elif ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'
    then
        need_node=1
    fi
fi

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
         | grep -q 'install ok installed'
    then
        missing+=("$p")
    fi
done
if [ "$need_node" = 1 ]; then
    missing+=(nodejs npm)
fi

[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"

if [ "$(id -u)" != 0 ]; then
    echo "chatbridge needs these Debian packages: ${missing[*]}" >&2
    echo "Install them as root, then run make again:" >&2
    echo "    sudo sh -c '$cmd'" >&2
    exit 1
fi

echo "chatbridge: installing ${missing[*]}" >&2

# keep Debian's nginx service from starting on port 80 during the install;
# the policy goes again however the script ends (an error, HUP, INT, TERM:
# each exits through the EXIT trap), and the trap is in place before the
# file is made, so no moment has the one without the other.
# (CHATBRIDGE_POLICY_RC: another path, for t/002-make-run.t)
policy=${CHATBRIDGE_POLICY_RC:-/usr/sbin/policy-rc.d}
made_policy=0
remove_policy() {
    if [ "$made_policy" = 1 ]; then
        rm -f "$policy"
    fi
}
trap remove_policy EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
if [ ! -e "$policy" ]; then
    made_policy=1
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
fi

apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
