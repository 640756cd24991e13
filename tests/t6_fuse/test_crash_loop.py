"""A journaled crash loop: writers on a real mount, kill -9 of the daemon at random moments.

Several writer threads create, overwrite, append to, rename (over existing files too) and
delete files of their own. Before each operation they journal what it will do, after it
returned that it did (a journal outside the mount, fsynced). The daemon is killed at a
random moment; the next mount with the same cache directory drains its outbox, and then:

- every file whose last returned operation was a close holds exactly what that close wrote
  (or what the operation under way at the kill would have made of it): nothing lost, nothing
  rolled back to an older close, no EIO, no wrong bytes;
- files renamed or deleted by a returned call are where the journal says;
- ``b2cryptfs fsck`` (with the private key: every pair opened) reports nothing: no orphan
  key object, no stale key, no broken pair, after interrupted uploads, unlinks and renames.

After the last kill everything is read once more through a fresh cache (the store alone).
The figures are printed (``pytest -s``). CI runs a handful of kills per store; the heavy
form (B2CRYPTFS_HEAVY=1) 24. B2CRYPTFS_CRASH_KILLS=N sets the number of kills.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mountutil import Keys, Mount, StoreSpec, mount_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import HEAVY, MB, cli, outbox_entries, wait_until

pytestmark = requires_fuse

KILLS = int(os.environ.get("B2CRYPTFS_CRASH_KILLS", 24 if HEAVY else 4))
WRITERS = 4 if HEAVY else 3
FILES_PER_WRITER = 6
# Both forms rename over existing files and unlink files whose newest content is still in
# the outbox over a stored older version: the two cases that once lost or rolled back files
# (issue 10 item 1; unlink dropping the pending upload before the stored delete). Set to
# False by hand to tell other failures apart from these.
RENAME_OVER_EXISTING = True
UNLINK_WHILE_PENDING = True


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


ABSENT = "absent"


class Journal:
    """Every operation, journaled before it starts and after it returned (fsynced lines)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def write(self, record: dict[str, object]) -> None:
        with self._lock:
            self._fh.write(json.dumps(record) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def records(self) -> list[dict]:
        with open(self.path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]


@dataclass
class Figures:
    kills: int = 0
    closes: int = 0
    renames: int = 0
    unlinks: int = 0
    lost: int = 0
    rolled_back: int = 0
    wrong: int = 0
    eio: int = 0
    resurrected: int = 0
    orphans: int = 0
    stale_keys: int = 0
    broken_pairs: int = 0
    other_problems: int = 0
    tidied: int = 0  # orphans and stale keys the mounts cleaned up themselves (their logs)
    failures: list[str] = field(default_factory=list)
    round: int = 0

    def fail(self, what: str) -> None:
        self.failures.append(f"after kill {self.round}: {what}")

    def line(self) -> str:
        names = (
            "kills closes renames unlinks lost rolled_back wrong eio resurrected orphans "
            "stale_keys broken_pairs other_problems tidied"
        ).split()
        return ", ".join(f"{n.replace('_', ' ')} {getattr(self, n)}" for n in names)


class Model:
    """What each path may hold, replayed from the journal.

    ``state[path]``: the content hash (or ABSENT) after the last operation that returned.
    An operation begun but not returned at the kill adds the state it would have made.
    ``closed[path]``: every hash a close ever left there, ``ever`` every hash of any path
    (to tell a rollback to older content from garbage).
    """

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.closed: dict[str, set[str]] = {}
        self.ever: set[str] = set()  # every hash any close wrote (renames move them about)

    def _apply(self, rec: dict, state: dict[str, str]) -> None:
        op = rec["op"]
        if op == "write":
            state[rec["path"]] = rec["sha"]
        elif op == "rename":
            state[rec["dst"]] = state.get(rec["src"], ABSENT)
            state[rec["src"]] = ABSENT
        elif op == "unlink":
            state[rec["path"]] = ABSENT

    def replay(self, records: list[dict], since: int) -> dict[str, set[str]]:
        """Fold in records[since:]; return the acceptable states of every path."""
        begun: dict[int, dict] = {}
        for rec in records[since:]:
            if rec["phase"] == "begin":
                begun[rec["id"]] = rec
                if rec["op"] == "write":
                    self.closed.setdefault(rec["path"], set()).add(rec["sha"])
                    self.ever.add(rec["sha"])
            else:
                self._apply(begun.pop(rec["id"]), self.state)
        ok = {p: {s} for p, s in self.state.items()}
        for rec in begun.values():  # under way at the kill: done or not, both are fine
            after = dict(self.state)
            self._apply(rec, after)
            for p, s in after.items():
                ok.setdefault(p, {ABSENT}).add(s)
        return ok


def names_of(w: int) -> list[str]:
    return [f"w{w}/f{j}.bin" for j in range(FILES_PER_WRITER)]


class Writer(threading.Thread):
    """One writer on its own files, until its mount dies (or ``stop`` is set)."""

    def __init__(
        self, w: int, mnt: Path, journal: Journal, ids: Iterator[int], over_existing: bool
    ) -> None:
        super().__init__(daemon=True)
        self.w, self.mnt, self.journal, self.ids = w, mnt, journal, ids
        self.over_existing = over_existing
        self.rng = random.Random(time.monotonic_ns() ^ w)
        self.stop = threading.Event()
        self.killing = threading.Event()  # set by the test just before the kill
        self.early: BaseException | None = None  # an error while the daemon was alive
        self.ops = 0
        self.died: BaseException | None = None

    def _content(self) -> bytes:
        big = self.rng.random() < 0.08
        n = self.rng.randrange(MB, 3 * MB) if big else self.rng.randrange(0, 96 * 1024)
        return self.rng.randbytes(n)

    def _do(self, record: dict[str, object], action) -> None:  # noqa: ANN001
        rid = next(self.ids)
        self.journal.write({**record, "id": rid, "phase": "begin"})
        action()
        self.journal.write({"id": rid, "phase": "end"})
        self.ops += 1

    def step(self) -> None:
        names = names_of(self.w)
        existing = [n for n in names if (self.mnt / n).exists()]
        free = [n for n in names if n not in existing]
        roll = self.rng.random()
        if roll < 0.45 or not existing:
            path = self.rng.choice(names)
            data = self._content()
            self._do(
                {"op": "write", "path": path, "sha": sha(data)},
                lambda: (self.mnt / path).write_bytes(data),
            )
        elif roll < 0.6:
            path = self.rng.choice(existing)
            old = (self.mnt / path).read_bytes()
            extra = self.rng.randbytes(self.rng.randrange(1, 32 * 1024))

            def append() -> None:
                with open(self.mnt / path, "ab") as fh:
                    fh.write(extra)

            self._do({"op": "write", "path": path, "sha": sha(old + extra)}, append)
        elif roll < 0.85:
            src = self.rng.choice(existing)
            targets = [n for n in (names if self.over_existing else free) if n != src]
            if not targets:
                return
            dst = self.rng.choice(targets)
            self._do(
                {"op": "rename", "src": src, "dst": dst},
                lambda: os.rename(self.mnt / src, self.mnt / dst),
            )
        else:
            if not UNLINK_WHILE_PENDING:
                existing = [n for n in existing if not self._pending_over_stored(n)]
                if not existing:
                    return
            path = self.rng.choice(existing)
            self._do({"op": "unlink", "path": path}, lambda: os.unlink(self.mnt / path))

    def _pending_over_stored(self, name: str) -> bool:
        """A version of the file is stored and a newer one waits in the outbox (xattrs)."""
        p = self.mnt / name
        if os.getxattr(p, "user.b2cryptfs.upload") == b"stored":
            return False
        try:
            os.getxattr(p, "user.b2cryptfs.version")
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                return False  # never stored: dropping its upload is the whole unlink
            raise
        return True

    def run(self) -> None:
        try:
            (self.mnt / f"w{self.w}").mkdir(exist_ok=True)
            while not self.stop.is_set():
                self.step()
        except OSError as exc:
            # The daemon was killed under us: ENOTCONN, ECONNABORTED, or the dead mount's
            # mountpoint (ENOENT) once it is cleared.
            self.died = exc
            if not self.killing.is_set():
                self.early = exc
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.died = exc


def wait_drained(mnt: Path, timeout: float = 180) -> None:
    def drained() -> bool:
        st = json.loads(os.getxattr(mnt, "user.b2cryptfs.status"))
        # Uploads done, and the clean-up of what cut-short deletes and renames left.
        return st["pending_files"] == 0 and st["writing_files"] == 0 and st["tidy_pending"] == 0

    wait_until("the outbox to drain", drained, timeout=timeout)


def verify(mnt: Path, ok: dict[str, set[str]], model: Model, fig: Figures) -> None:
    """Read every path through the mount; classify what does not fit; make the model the
    state found (an operation under way at the kill is now decided)."""
    for path in sorted(ok):
        p = mnt / path
        try:
            got = sha(p.read_bytes())
        except FileNotFoundError:
            got = ABSENT
        except OSError as exc:
            fig.eio += exc.errno == errno.EIO
            fig.wrong += exc.errno != errno.EIO
            fig.fail(f"{path}: {exc}")
            continue
        allowed = ok[path]
        if got not in allowed:
            if got == ABSENT:
                fig.lost += 1
                kind = "lost"
            elif ABSENT in allowed and len(allowed) == 1:
                fig.resurrected += 1
                kind = "back after its rename or unlink"
            elif got in model.closed.get(path, set()) or got in model.ever:
                fig.rolled_back += 1
                kind = "rolled back to an older close"
            else:
                fig.wrong += 1
                kind = "wrong bytes"
            fig.fail(f"{path}: {kind} (allowed {sorted(s[:8] for s in allowed)}, got {got[:8]})")
        model.state[path] = got


def fsck(spec: StoreSpec, keys: Keys, cache: Path, fig: Figures) -> None:
    # With the mount's cache: an upload still waiting there (stuck or not) is reported too.
    res = cli(spec, "fsck", *keys.args(), "--cache-dir", str(cache), spec.url, check=False)
    for line in res.stdout.splitlines():
        kind = line.split(" ", 1)[0]
        if kind in ("clean",) or line.endswith("remain"):
            continue
        fig.fail(f"fsck: {line}")
        if kind == "orphan-key":
            fig.orphans += 1
        elif kind == "stale-key":
            fig.stale_keys += 1
        elif kind == "broken-pair":
            fig.broken_pairs += 1
        else:
            fig.other_problems += 1
    if res.returncode not in (0, 1):
        fig.fail(f"fsck exited {res.returncode}: {res.stderr.strip()}")
        fig.other_problems += 1


def count_ops(records: list[dict], fig: Figures) -> None:
    begun = {r["id"]: r["op"] for r in records if r["phase"] == "begin"}
    for r in records:
        if r["phase"] == "end":
            op = begun[r["id"]]
            fig.closes += op == "write"
            fig.renames += op == "rename"
            fig.unlinks += op == "unlink"


@pytest.mark.heavy
@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_journaled_crash_loop(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    spec = mount_store
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    over_existing = RENAME_OVER_EXISTING
    journal = Journal(tmp_path / "journal.jsonl")
    model, fig = Model(), Figures()
    ids = iter(range(1, 1 << 62))
    rng = random.Random()
    done = 0
    try:
        for _round in range(KILLS):
            fig.round = _round
            m = Mount(spec, mnt, cache, rsa_keys.args())
            try:
                m.start()
                ok = model.replay(journal.records(), done)
                done = len(journal.records())
                wait_drained(mnt)
                verify(mnt, ok, model, fig)
                fsck(spec, rsa_keys, cache, fig)
                writers = [Writer(w, mnt, journal, ids, over_existing) for w in range(WRITERS)]
                for t in writers:
                    t.start()
                time.sleep(rng.uniform(0.5, 4.0 if HEAVY else 2.5))
                for t in writers:
                    t.killing.set()
                m.kill9()
                fig.kills += 1
            finally:
                m.close(expect_exit=None)
            for t in writers:
                t.join(60)
                assert not t.is_alive(), "a writer hangs on the dead mount"
                assert isinstance(t.died, OSError), f"writer {t.w}: {t.died!r}"
                if t.early is not None:
                    fig.fail(f"writer {t.w} failed on a live mount: {t.early!r}")
        # The last kill's aftermath, then everything once more from the store alone.
        fig.round = KILLS
        with mounted(spec, mnt, cache, rsa_keys.args()):
            ok = model.replay(journal.records(), done)
            wait_drained(mnt)
            verify(mnt, ok, model, fig)
        assert not outbox_entries(cache)
        fsck(spec, rsa_keys, cache, fig)
        fresh = {p: {s} for p, s in model.state.items()}
        with mounted(
            spec, mnt, tmp_path / "fresh-cache", rsa_keys.args(), extra_args=["--read-only"]
        ):
            verify(mnt, fresh, model, fig)
    finally:
        journal.close()
    count_ops(journal.records(), fig)
    for log in tmp_path.glob("mount-*.log"):
        fig.tidied += log.read_text(errors="replace").count("(left by an interrupted change)")
    print(f"\ncrash loop on {spec.kind}: {fig.line()}")
    for line in fig.failures:
        print("  ", line)
    assert fig.kills == KILLS and fig.closes > KILLS
    assert not fig.failures, fig.line()
