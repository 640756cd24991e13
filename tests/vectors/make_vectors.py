"""Make the frozen example stores in tests/vectors/ (format version 1).

Run once per format version; never regenerate to make a test pass. The vectors are what this
version wrote; tests/t7_cli/test_vectors.py reads them in every later version, so a silent
change of the bucket or cache-directory format fails there. A new format version gets a new
directory (v2/ ...) beside the old one, which stays.

    PYTHONPATH=. python3 tests/vectors/make_vectors.py tests/vectors/v1

The keys made here are test-only keys, generated for these vectors and published with them.
Object file info (DirStore keeps it in the ``user.b2cryptfs.info`` xattr, which git does not
keep) is written to ``info.json`` beside each store; the test re-applies it to a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PASSPHRASE = "vectors-test-only"  # the test-only RSA key's passphrase
MTIME = 1_700_000_000  # fixed mtime of every plaintext file (seconds)
XATTR = "user.b2cryptfs.info"


def cli(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "b2cryptfs", *args], env=env, check=True)


def plaintexts() -> dict[str, bytes]:
    rnd = random.Random(20261201)
    return {
        "hello.txt": b"hello, frozen world\n",
        "empty": b"",
        "docs/Ünïcode name.txt": "naïve café\n".encode() * 3,
        "docs/big.bin": rnd.randbytes(2**18 + 4321),  # several age chunks, ragged end
    }


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.utime(p, (MTIME, MTIME))


def freeze_store(src: Path, dest: Path) -> None:
    """Copy a DirStore's objects to dest/store and their file info to dest/info.json."""
    info: dict[str, dict[str, str]] = {}
    for p in sorted(src.rglob("*")):
        if not p.is_file() or p.relative_to(src).parts[0] == ".b2cryptfs-tmp":
            continue
        rel = p.relative_to(src).as_posix()
        out = dest / "store" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, out)
        try:
            info[rel] = json.loads(os.getxattr(p, XATTR))
        except OSError:
            pass
    (dest / "info.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


def main(out: Path) -> None:
    if out.exists():
        sys.exit(f"{out} exists: vectors are made once per format version, never regenerated")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "B2CRYPTFS_"))}
    env["B2CRYPTFS_PASSPHRASE"] = PASSPHRASE
    files = plaintexts()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        keys = out / "keys"
        keys.mkdir(parents=True)
        cli(
            "keygen",
            "-o",
            str(keys / "rsa-priv.pem"),
            "--public-out",
            str(keys / "rsa-pub.pem"),
            env=env,
        )
        cli("keygen", "--age", "-o", str(keys / "age-key.txt"), env=env)
        (keys / "PASSPHRASE").write_text(PASSPHRASE + "\n")
        age_recipient = next(
            line.split(":", 1)[1].strip()
            for line in (keys / "age-key.txt").read_text().splitlines()
            if line.startswith("# public key:")
        )
        plain = tmp / "plain"
        write_tree(plain, files)
        srcs = [str(plain / name) for name in ("hello.txt", "empty", "docs")]
        rsa = ["--private-key", str(keys / "rsa-priv.pem")]
        stores = {
            # (a) age pairs to two recipients: the RSA key (ssh-rsa stanza) and an X25519 key
            "age": [*rsa, "--public-key", str(keys / "rsa-pub.pem"), "--public-key", age_recipient],
            # (b) the openssl (Backblaze sample) format, with its key check value in the info
            "openssl": [*rsa, "--format", "openssl"],
            # (c) encrypted names (age content)
            "names": [*rsa, "--encrypt-names"],
        }
        for name, args in stores.items():
            store = tmp / f"store-{name}"
            store.mkdir()
            cli("put", "-r", *args, *srcs, str(store), env=env)
            freeze_store(store, out / name)

        # (d) an outbox entry as a killed mount leaves it: sealed pair + manifest, plus the
        # content file of a second entry whose sealing was cut short (no manifest).
        import trio

        from b2cryptfs.vfs.outbox import Outbox
        from b2cryptfs.vfs.outboxcontent import ContentFile, WrittenContent

        store = tmp / "store-outbox"
        (store / "pending").mkdir(parents=True)
        (plain / "pending").mkdir()
        pending = plain / "pending" / "waiting.txt"
        pending.write_bytes(b"sealed before the kill, uploaded by the next mount\n" * 50)
        os.utime(pending, (MTIME, MTIME))
        cli("put", *rsa, str(pending), str(store) + "/pending/waiting.txt", env=env)
        key_obj = (store / "pending" / "waiting.txt.key.enc").read_bytes()
        content = (store / "pending" / "waiting.txt.enc").read_bytes()
        info = json.loads(os.getxattr(store / "pending" / "waiting.txt.enc", XATTR))
        outbox_dir = out / "outbox" / "outbox"
        box = Outbox(str(outbox_dir), None, trio.CapacityLimiter(1))  # type: ignore[arg-type]

        def write_content(dst: ContentFile) -> WrittenContent:
            dst.write(content)
            return WrittenContent(key_obj, info, "age", pending.stat().st_size)

        box.put("pending/waiting.txt", MTIME * 1000, write_content)()
        # A second sealing cut short by the kill: its content file, no manifest.
        half = outbox_dir / "000000000002.content"
        half.write_bytes(b"half-sealed content, no manifest: not an entry")
        files["pending/waiting.txt"] = pending.read_bytes()

    expected = {
        rel: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "mtime": MTIME}
        for rel, data in sorted(files.items())
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "v1"))
