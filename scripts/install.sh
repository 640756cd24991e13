#!/usr/bin/env bash
# Install what b2cryptfs and its tests need on Debian/Ubuntu, then the package itself
# (editable, for development), its man pages and its mount(8) helpers.
# Idempotent: packages already present are not fetched again.
# `scripts/install.sh --man-only` installs just the man pages (used by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
MAN_ROOT=${MAN_ROOT:-/usr/local/share/man}
SBIN_DIR=${SBIN_DIR:-/sbin}

# man(1) looks in $MAN_ROOT/manN; mandb refreshes its index (apropos, whatis) when present.
install_man_pages() {
    local page section
    for page in man/*.[158]; do
        section=${page##*.}
        $SUDO mkdir -p "$MAN_ROOT/man$section"
        $SUDO install -m 0644 "$page" "$MAN_ROOT/man$section/"
    done
    if command -v mandb >/dev/null 2>&1; then
        $SUDO mandb -q "$MAN_ROOT" >/dev/null 2>&1 || true
    fi
}

if [ "${1:-}" = "--man-only" ]; then
    install_man_pages
    exit 0
fi

# fuse3/libfuse3-dev/pkg-config: pyfuse3 builds against libfuse3 and mounts with fusermount3.
# openssl, age, rclone, rsync, sqlite3, git: real tools the tests run against the filesystem.
# man-db: `man b2cryptfs` and `man -w`.
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc openssl age rclone rsync sqlite3 git tar coreutils findutils man-db strace)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing system packages: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test,completion]'

# mount(8) runs helpers with a minimal PATH (and no HOME): put the entry points where its
# shell finds them, so that `mount -t fuse.b2cryptfs` and fstab lines work (mount.fuse3
# runs `b2cryptfs` from that PATH).
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if [ "$scripts_dir" != /usr/local/bin ] && [ "$scripts_dir" != /usr/bin ]; then
    $SUDO ln -sf "$scripts_dir/b2cryptfs" /usr/local/bin/b2cryptfs
    $SUDO mkdir -p /usr/local/sbin
    $SUDO ln -sf "$scripts_dir/mount.b2cryptfs" /usr/local/sbin/mount.b2cryptfs
fi
# `mount -t b2cryptfs` and fstab type b2cryptfs: mount(8) looks for /sbin/mount.TYPE only
# (its helper search path is /sbin:/sbin/fs.d:/sbin/fs, not $PATH).
if [ ! -e "$SBIN_DIR/mount.b2cryptfs" ] || [ -L "$SBIN_DIR/mount.b2cryptfs" ]; then
    $SUDO ln -sf "$scripts_dir/mount.b2cryptfs" "$SBIN_DIR/mount.b2cryptfs"
fi

install_man_pages
