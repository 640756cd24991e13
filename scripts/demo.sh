#!/usr/bin/env bash
# Install b2cryptfs, make a key pair and a local demo store, and mount it at ./demo/mnt.
# Unmount with: fusermount3 -u demo/mnt
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh

DEMO="$PWD/demo"
mkdir -p "$DEMO/store" "$DEMO/mnt" "$DEMO/cache"
chmod 700 "$DEMO"
if [ ! -f "$DEMO/passphrase" ]; then
    # A demo only: a real key's passphrase belongs in your head or a password manager.
    head -c 18 /dev/urandom | base64 > "$DEMO/passphrase"
    chmod 600 "$DEMO/passphrase"
fi
if [ ! -f "$DEMO/priv-key.pem" ]; then
    b2cryptfs keygen -o "$DEMO/priv-key.pem" --public-out "$DEMO/pub-key.pem" \
        --passphrase-file "$DEMO/passphrase"
fi
if [ -z "$(ls -A "$DEMO/store")" ]; then
    echo "Hello from b2cryptfs. This file is stored as hello.txt.key.enc + hello.txt.enc." > "$DEMO/hello.txt"
    b2cryptfs put --public-key "$DEMO/pub-key.pem" "$DEMO/hello.txt" "$DEMO/store/"
    rm "$DEMO/hello.txt"
fi
if mountpoint -q "$DEMO/mnt"; then
    fusermount3 -u "$DEMO/mnt"
fi
b2cryptfs mount "$DEMO/store" "$DEMO/mnt" \
    --private-key "$DEMO/priv-key.pem" --passphrase-file "$DEMO/passphrase" \
    --cache-dir "$DEMO/cache"
echo
echo "Mounted: $DEMO/mnt  (encrypted objects in $DEMO/store)"
ls -l "$DEMO/mnt"
echo "Try: echo hi > demo/mnt/new.txt; ls demo/store; fusermount3 -u demo/mnt"
