#!/usr/bin/env bash
# An armhf (armv7) Debian userland with the board's Python stack, and the instruction-count plugin, for
# `python -m flow bench a9 --a9 DIR`: the host path's stages counted on the Cortex-A9's instruction set under
# qemu-user (flow/a9/count.py, flow/a9/estimate.py). Debian bookworm's armhf Python 3.11 / numpy 1.24 / OpenCV 4.6 /
# Pillow 9.4 / libjpeg-turbo 2.1.5 are the closest Debian has to the PYNQ 3.0.1 image's Ubuntu 22.04 armhf
# 3.10 / 1.21 / 4.5.4 / 9.0.1 / 2.1.2, built with the same packaging (OpenCV: NEON only where dispatched).
#
# usage: bash flow/a9/setup.sh DIR    (root: adds the armhf architecture and a deb-src entry to apt; about 250 MB
#        of packages from deb.debian.org, a few minutes). Makes DIR/root and DIR/insn_count.so; rerunning skips
#        what is there.
set -euo pipefail
dir=${1:?usage: bash flow/a9/setup.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
root=$dir/root

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: needs root for apt (dpkg --add-architecture armhf, apt-get install qemu-user)" >&2
    exit 1
fi

if [ ! -x "$root/usr/bin/python3" ]; then
    dpkg --add-architecture armhf
    # a mirror mid-sync fails one index (e.g. bookworm-security's armhf list) and apt-get update exits non-zero; the
    # packages below come from the main archive, so go on with the indexes that did download
    apt-get update -qq || echo "setup.sh: apt-get update reported errors (above); going on with the indexes it has" >&2
    apt-get install -y -qq qemu-user libglib2.0-dev gcc pkg-config xz-utils >/dev/null
    debs=$dir/debs
    mkdir -p "$debs"
    # The dependency closure of the packages the stages import, each package's armhf build (or its arch-all one).
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
        --no-enhances python3:armhf python3-numpy:armhf python3-opencv:armhf python3-pil:armhf \
        | grep -E '^[a-z0-9]' | sed 's/:armhf$//' | sort -u >"$dir/packages.txt"
    echo "downloading $(wc -l <"$dir/packages.txt") armhf packages into $debs"
    (cd "$debs" && xargs -P 6 -I{} sh -c 'apt-get download -qq "{}:armhf" >/dev/null 2>&1 ||
        apt-get download -qq "{}" >/dev/null 2>&1 || echo "not downloaded: {}"' <"$dir/packages.txt")
    tmp=$root.partial
    rm -rf "$tmp"
    mkdir -p "$tmp"
    for d in "$debs"/*.deb; do dpkg -x "$d" "$tmp"; done
    # update-alternatives would make these links in a package's postinst, which dpkg -x does not run.
    lib=$tmp/usr/lib/arm-linux-gnueabihf
    ln -sf blas/libblas.so.3 "$lib/libblas.so.3"
    ln -sf lapack/liblapack.so.3 "$lib/liblapack.so.3"
    [ -e "$tmp/usr/bin/python3" ] || ln -s python3.11 "$tmp/usr/bin/python3"
    mv "$tmp" "$root"
fi

if [ ! -f "$dir/insn_count.so" ]; then
    hdr=$dir/qemu-include
    if [ ! -f "$hdr/qemu-plugin.h" ]; then
        # qemu-plugin.h, the plugin API of the installed qemu-user, is in QEMU's source package only.
        ver=$(dpkg-query -W -f='${source:Version}' qemu-user)
        grep -rqs '^Types: deb-src' /etc/apt/sources.list.d/ || cat >/etc/apt/sources.list.d/lpyolo-deb-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $(sed -n "s/^VERSION_CODENAME=//p" /etc/os-release)
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt-get update -qq || echo "setup.sh: apt-get update reported errors (above); going on" >&2
        src=$dir/qemu-src
        mkdir -p "$src" "$hdr"
        (cd "$src" && apt-get source --download-only -qq "qemu=$ver" >/dev/null)
        tar -xJf "$src"/qemu_*.orig.tar.xz -C "$src" --wildcards '*/include/qemu/qemu-plugin.h'
        cp "$src"/qemu-*/include/qemu/qemu-plugin.h "$hdr/"
    fi
    # shellcheck disable=SC2046  # pkg-config prints several flags
    cc -shared -fPIC -O2 -Wall -I"$hdr" $(pkg-config --cflags glib-2.0) "$here/insn_count.c" -o "$dir/insn_count.so"
fi

echo "armhf root: $root ($(du -sh "$root" | cut -f1)); plugin: $dir/insn_count.so"
echo "next: python -m flow bench a9 --a9 $dir [--sim --deploy DEPLOY] [--json FILE]"
