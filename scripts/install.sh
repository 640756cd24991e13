#!/usr/bin/env bash
# Install what b2cryptfs and its tests need on Debian/Ubuntu, then the package itself.
# Idempotent: packages already present are not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# fuse3/libfuse3-dev/pkg-config: pyfuse3 builds against libfuse3 and mounts with fusermount3.
# openssl, age, rclone, rsync, sqlite3, git: real tools the tests run against the filesystem.
APT_PACKAGES=(fuse3 libfuse3-dev pkg-config gcc openssl age rclone rsync sqlite3 git tar coreutils findutils)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing system packages: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'

# mount(8) runs helpers with a minimal PATH (and no HOME): put the entry points where its
# shell finds them, so that `mount -t fuse.b2cryptfs` and fstab lines work.
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
if [ "$scripts_dir" != /usr/local/bin ] && [ "$scripts_dir" != /usr/bin ]; then
    $SUDO ln -sf "$scripts_dir/b2cryptfs" /usr/local/bin/b2cryptfs
    $SUDO mkdir -p /usr/local/sbin
    $SUDO ln -sf "$scripts_dir/mount.b2cryptfs" /usr/local/sbin/mount.b2cryptfs
fi
