"""Peak memory (RSS) of encrypting and decrypting a large file, for each format.

Runs ``b2cryptfs put`` and ``b2cryptfs get`` on a local directory store in child processes
and prints each one's peak RSS (the goal: under 150 MB for a 1 GiB file) and throughput.

    python3 bench/memory.py [--size-mib 1024] [--format age|openssl|both]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(seconds, peak RSS in bytes) of one child process."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(argv)}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports KiB


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--format", choices=("age", "openssl", "both"), default="both")
    args = ap.parse_args()
    formats = ("age", "openssl") if args.format == "both" else (args.format,)
    cli = [sys.executable, "-m", "b2cryptfs"]
    with tempfile.TemporaryDirectory(prefix="b2cryptfs-bench-") as tmp:
        env = dict(os.environ, B2CRYPTFS_PASSPHRASE="bench passphrase")
        priv, pub = os.path.join(tmp, "priv.pem"), os.path.join(tmp, "pub.pem")
        subprocess.run([*cli, "keygen", "-o", priv, "--public-out", pub], env=env, check=True)
        src = os.path.join(tmp, "big.bin")
        with open(src, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        want = sha256_of(src)
        size = args.size_mib << 20
        print(f"file: {args.size_mib} MiB; limit 150 MB peak RSS")
        for fmt in formats:
            store = os.path.join(tmp, f"store-{fmt}")
            os.mkdir(store)
            t_put, rss_put = run_child(
                [*cli, "put", "--format", fmt, "--public-key", pub, src, store + "/"], env
            )
            out = os.path.join(tmp, f"out-{fmt}.bin")
            t_get, rss_get = run_child(
                [*cli, "get", "--private-key", priv, f"{store}/big.bin", out], env
            )
            ok = sha256_of(out) == want
            os.unlink(out)
            for what, t, rss in (("encrypt", t_put, rss_put), ("decrypt", t_get, rss_get)):
                verdict = "ok" if rss < 150e6 else "OVER LIMIT"
                print(
                    f"{fmt:8} {what}: peak RSS {rss / 1e6:6.1f} MB ({verdict}), "
                    f"{size / t / 1e6:7.1f} MB/s"
                )
            print(f"{fmt:8} round trip identical: {ok}")


if __name__ == "__main__":
    main()
