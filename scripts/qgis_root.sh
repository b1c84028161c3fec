#!/usr/bin/env bash
# A Debian root with Debian's own QGIS, for testing the plugin on another QGIS than the host's.
#
#   scripts/qgis_root.sh SUITE                 build the root if needed and print its path
#   scripts/qgis_root.sh SUITE run CMD ARG...  run CMD in it (as root, cwd = this checkout, same path)
#
# SUITE is a Debian suite: trixie (QGIS 3.40, Python 3.13) or sid (QGIS 3.44, Python 3.14). The root is cached
# in $DF4LCZ_ROOTS (default /var/cache/df4lcz/roots)/SUITE and reused; it is built under SUITE.partial and renamed
# only when complete, so a killed build is never taken for a root. The Debian mirror is the one this host's apt
# uses. The run happens in a private mount namespace: /proc, /dev, /sys and the bind mounts (this checkout, the
# asset and pip caches, the CA bundle) vanish with it, however the run ends.
set -euo pipefail

SUITE=${1:?usage: $0 SUITE [run CMD...]}
ROOTS=${DF4LCZ_ROOTS:-/var/cache/df4lcz/roots}
ROOT=$ROOTS/$SUITE
HERE=$(cd "$(dirname "$0")/.." && pwd)
PACKAGES=qgis,python3-qgis,qgis-providers,python3-pytest,python3-venv,python3-pip,unzip,ca-certificates,locales
APT_OPTS=(-o Acquire::Check-Valid-Until=false -o APT::Install-Recommends=false)  # sid's Release is often expired

host_mirror() {  # the first Debian archive URI in this host's apt sources (deb822 or one-line format)
    local codename
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    local f files=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    awk -v c="$codename" '
        /^deb / && $3 == c { print $2; exit }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c && uri != "") { print uri; exit } }' "${files[@]}"
}

build() {
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
    local mirror partial=$ROOT.partial start=$SECONDS
    mirror=$(host_mirror)
    [ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
    rm -rf "$partial"
    mkdir -p "$ROOTS"
    echo "debootstrap $SUITE from $mirror" >&2
    debootstrap --variant=minbase --components=main "$SUITE" "$partial" "$mirror" >&2
    echo "TIME debootstrap $SUITE $((SECONDS - start)) s" >&2
    start=$SECONDS
    echo "deb $mirror $SUITE main" > "$partial/etc/apt/sources.list"
    in_root "$partial" apt-get "${APT_OPTS[@]}" update -qq
    in_root "$partial" env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -qq ${PACKAGES//,/ } >&2
    in_root "$partial" apt-get clean
    echo "TIME apt $SUITE $((SECONDS - start)) s" >&2
    mv "$partial" "$ROOT"
}

# in_root DIR CMD...: CMD inside DIR, with the host's CA bundle, pip settings and caches.
in_root() {
    local dir=$1 status; shift
    # The host's CA bundle and pip configuration: registries here are reached through them.
    mkdir -p "$dir/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/host-ca-certificates.crt"
    [ -f /etc/pip.conf ] && cp /etc/pip.conf "$dir/etc/pip.conf"
    [ -f "$HOME/.config/pip/pip.conf" ] && cp "$HOME/.config/pip/pip.conf" "$dir/etc/pip-host-user.conf"
    cp /etc/resolv.conf "$dir/etc/resolv.conf"
    local assets=${XDG_CACHE_HOME:-$HOME/.cache}/df4lcz pipcache=${PIP_CACHE_DIR:-$HOME/.cache/pip} scratch
    mkdir -p "$assets" "$pipcache"
    # The run's /tmp (profile, installed packages, test files) is a host folder deleted afterwards: the cached
    # root stays as built.
    scratch=$(mktemp -d "${TMPDIR:-/var/tmp}/df4lcz-root.XXXXXX")
    chmod 1777 "$scratch"
    trap 'rm -rf "$scratch"' EXIT
    trap 'exit 143' TERM INT
    local -a env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
                  XDG_CACHE_HOME=/root/.cache PIP_CACHE_DIR=/var/cache/pip
                  SSL_CERT_FILE=/etc/ssl/certs/host-ca-certificates.crt PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt
                  REQUESTS_CA_BUNDLE=/etc/ssl/certs/host-ca-certificates.crt)
    [ -f "$dir/etc/pip-host-user.conf" ] && env+=(PIP_CONFIG_FILE=/etc/pip-host-user.conf)
    while IFS='=' read -r name value; do  # the host's other pip settings (index, timeout, ...)
        case $name in PIP_CERT|PIP_CACHE_DIR|PIP_CONFIG_FILE) ;; PIP_*|DF4LCZ_*) env+=("$name=$value") ;; esac
    done < <(env)
    unshare --mount --propagation private -- bash -euc '
        dir=$1 here=$2 assets=$3 pipcache=$4 scratch=$5; shift 5
        mount -t proc proc "$dir/proc"
        mount --rbind /dev "$dir/dev"
        mount --rbind /sys "$dir/sys"
        mkdir -p "$dir/root/.cache/df4lcz" "$dir/var/cache/pip" "$dir/tmp"
        mount --bind "$scratch" "$dir/tmp"  # first: a checkout under /tmp (CI clones anywhere) goes on top of it
        mkdir -p "$dir$here"
        mount --bind "$here" "$dir$here"
        mount --bind "$assets" "$dir/root/.cache/df4lcz"
        mount --bind "$pipcache" "$dir/var/cache/pip"
        # Folders the checkout links to outside itself (a git worktree'"'"'s resources/lcz_models), at their path.
        find "$here" -maxdepth 2 -type l -xtype d -print0 | while IFS= read -r -d "" link; do
            target=$(readlink -f "$link")
            case $target in "$here"/*) ;; *) mkdir -p "$dir$target"; mount --bind "$target" "$dir$target" ;; esac
        done
        exec chroot "$dir" /usr/bin/env -i "$@"' _ "$dir" "$HERE" "$assets" "$pipcache" "$scratch" "${env[@]}" \
        bash -c 'cd "$0" && exec "$@"' "$HERE" "$@" || status=$?
    rm -rf "$scratch"
    trap - EXIT
    return "${status:-0}"
}

[ "$(id -u)" = 0 ] || { echo "$0 needs root: debootstrap, chroot and mounts (run it with sudo)" >&2; exit 1; }
[ -d "$ROOT" ] || build
if [ "${2:-}" = run ]; then
    shift 2
    in_root "$ROOT" "$@"
else
    echo "$ROOT"
fi
