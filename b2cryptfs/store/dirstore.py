"""DirStore: the object layout of a bucket in a local directory.

The object ``photos/a.jpg.enc`` is the file ``photos/a.jpg.enc`` under the root, so a folder
filled by the seed's ``encrypt.sh`` is a valid store as is.

- Writes are atomic: a temporary file in ``ROOT/.b2cryptfs-tmp/`` (mode 0700, never listed)
  is written, fsynced and renamed into place.
- File info is kept as JSON in the extended attribute ``user.b2cryptfs.info``. On a
  filesystem without user xattrs it is silently dropped: such a store still works, but
  readers get ``info == {}`` (formats must cope, as they do with objects the seed's scripts
  wrote).
- ``src_last_modified_millis`` is applied to the file's mtime and ``mtime_ms`` is always read
  back from the mtime, so ``touch`` on a stored file is what the upper layers see.
- There are no old versions: ``versions()`` returns the current file only; ``hide()``
  deletes the file and prunes directories it leaves empty (never the root).
- ``version_id`` combines inode, ctime, mtime and size. Every write goes through a new
  inode and a rename (which sets ctime), so it changes on every write.
- Names B2 accepts but a directory cannot hold (empty, ``.`` or ``..`` segments, a trailing
  ``/``, the temp dir, a name that is both a file and a directory) raise InvalidName.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import stat as stat_mod
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

from b2cryptfs.errors import InvalidName, NotFound, StoreError
from b2cryptfs.store.base import (
    MTIME_KEY,
    Listing,
    ObjectInfo,
    validate_info,
    validate_name,
)

log = logging.getLogger(__name__)

TMP_DIR = ".b2cryptfs-tmp"
XATTR = "user.b2cryptfs.info"
_COPY_CHUNK = 1 << 20
# errnos meaning "this filesystem has no (user) xattrs"
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM}


def _sort_key(name: str) -> bytes:
    # B2 orders names by their UTF-8 bytes, not by code points of Python str.
    return name.encode("utf-8", "surrogateescape")


def _os_error(exc: OSError, what: str) -> StoreError:
    return StoreError(f"{what}: {exc.strerror or exc}")


class DirStore:
    """A Store over a local directory (see the module docstring for the rules)."""

    # Object names are relative to the directory itself: nothing is counted before them.
    prefix = ""

    def __init__(self, root: str, *, url: str | None = None, create: bool = False) -> None:
        root = os.path.abspath(root)
        if create:
            try:
                os.makedirs(root, exist_ok=True)
            except OSError as exc:
                raise _os_error(exc, f"cannot create {root}") from None
        if not os.path.isdir(root):
            raise NotFound(f"no such directory: {root}")
        self.root = root
        self.url = url or f"file://{root}"
        self._tmp = os.path.join(root, TMP_DIR)

    def __repr__(self) -> str:
        return f"DirStore({self.root!r})"

    # --- names -------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        validate_name(name)
        segs = name.split("/")
        if any(s in ("", ".", "..") for s in segs):
            raise InvalidName(f"a directory store cannot hold the object name {name!r}")
        if segs[0] == TMP_DIR:
            raise InvalidName(f"{TMP_DIR} is reserved in a directory store: {name!r}")
        return os.path.join(self.root, *segs)

    def _dir_path(self, prefix: str) -> str | None:
        """Directory for a prefix ("" or ending in /); None if no such directory can exist."""
        if prefix == "":
            return self.root
        if not prefix.endswith("/"):
            raise InvalidName(f"a directory prefix must end with '/': {prefix!r}")
        try:
            return self._path(prefix[:-1])
        except InvalidName:
            return None

    # --- object info -------------------------------------------------------------------

    def _info_of(self, name: str, st: os.stat_result, path_or_fd: str | int) -> ObjectInfo:
        info: dict[str, str] = {}
        try:
            raw = os.getxattr(path_or_fd, XATTR)
            loaded = json.loads(raw)
            if isinstance(loaded, dict):
                info = {str(k): str(v) for k, v in loaded.items()}
        except OSError:
            pass  # no xattr (seed-made files) or no xattr support: no info
        except ValueError:
            log.warning("ignoring malformed file info on %s", name)
        return ObjectInfo(
            name=name,
            size=st.st_size,
            version_id=f"{st.st_ino:x}-{st.st_ctime_ns:x}-{st.st_mtime_ns:x}-{st.st_size:x}",
            mtime_ms=st.st_mtime_ns // 1_000_000,
            upload_ms=st.st_ctime_ns // 1_000_000,
            info=info,
        )

    def stat(self, name: str) -> ObjectInfo | None:
        path = self._path(name)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _os_error(exc, f"cannot stat {name}") from None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return self._info_of(name, st, path)

    # --- listing -----------------------------------------------------------------------

    def _scan(self, dirpath: str, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        """Files and subdirectories of one directory, each list in B2 name order."""
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        try:
            entries = list(os.scandir(dirpath))
        except (FileNotFoundError, NotADirectoryError):
            return objects, prefixes
        except OSError as exc:
            raise _os_error(exc, f"cannot list {prefix or '/'}") from None
        for entry in entries:
            if prefix == "" and entry.name == TMP_DIR:
                continue
            name = prefix + entry.name
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                log.warning("skipping %r: not a valid UTF-8 name", name)
                continue
            try:
                if entry.is_dir():
                    prefixes.append(name + "/")
                elif entry.is_file():
                    objects.append(self._info_of(name, entry.stat(), entry.path))
            except FileNotFoundError:
                continue  # removed while we listed
            except OSError as exc:
                raise _os_error(exc, f"cannot stat {name}") from None
        objects.sort(key=lambda o: _sort_key(o.name))
        prefixes.sort(key=_sort_key)
        return objects, prefixes

    def list_dir(self, prefix: str) -> Listing:
        dirpath = self._dir_path(prefix)
        if dirpath is None:
            return Listing([], [])
        objects, prefixes = self._scan(dirpath, prefix)
        return Listing(objects, prefixes)

    def _walk(self, dirpath: str, prefix: str) -> Iterator[ObjectInfo]:
        objects, prefixes = self._scan(dirpath, prefix)
        # Merge so that the whole walk is in name order: a directory "d" sorts as "d/".
        items: list[tuple[bytes, ObjectInfo | str]] = [(_sort_key(o.name), o) for o in objects]
        items += [(_sort_key(p), p) for p in prefixes]
        items.sort(key=lambda t: t[0])
        for _, item in items:
            if isinstance(item, ObjectInfo):
                yield item
            else:
                yield from self._walk(os.path.join(dirpath, item[len(prefix) : -1]), item)

    def iter_all(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk from the deepest directory the prefix names, then filter on the full prefix.
        base = prefix[: prefix.rfind("/") + 1]
        dirpath = self._dir_path(base)
        if dirpath is None:
            return
        for obj in self._walk(dirpath, base):
            if obj.name.startswith(prefix):
                yield obj

    # --- reading -----------------------------------------------------------------------

    def _open_version(self, obj: ObjectInfo) -> BinaryIO:
        path = self._path(obj.name)
        try:
            f = open(path, "rb")  # noqa: SIM115 - returned to the caller
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"{obj.name} no longer exists") from None
        except OSError as exc:
            raise _os_error(exc, f"cannot open {obj.name}") from None
        cur = self._info_of(obj.name, os.fstat(f.fileno()), f.fileno())
        if cur.version_id != obj.version_id:
            f.close()
            raise NotFound(f"{obj.name} was replaced (version {obj.version_id} is gone)")
        return f

    def read(self, obj: ObjectInfo, offset: int = 0, length: int | None = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("negative offset or length")
        with self._open_version(obj) as f:
            try:
                if length is None:
                    f.seek(offset)
                    return f.read()
                return os.pread(f.fileno(), length, offset)
            except OSError as exc:
                raise _os_error(exc, f"cannot read {obj.name}") from None

    def download(self, obj: ObjectInfo, path: str) -> None:
        with self._open_version(obj) as src:
            try:
                with open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst, _COPY_CHUNK)
            except OSError as exc:
                raise _os_error(exc, f"cannot download {obj.name} to {path}") from None

    # --- writing -----------------------------------------------------------------------

    def _ensure_tmp(self) -> None:
        try:
            os.mkdir(self._tmp, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _os_error(exc, f"cannot create {self._tmp}") from None

    def _write(
        self, name: str, fill: Callable[[BinaryIO], None], info: dict[str, str]
    ) -> ObjectInfo:
        path = self._path(name)
        validate_info(info)
        self._ensure_tmp()
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="up-")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                self._set_info(f.fileno(), info)
                os.fsync(f.fileno())
            if MTIME_KEY in info:
                try:
                    ns = int(info[MTIME_KEY]) * 1_000_000
                    os.utime(tmp, ns=(ns, ns))
                except ValueError:
                    pass  # not a number: keep it as info, the mtime stays the upload time
            self._place(tmp, path, name)
            tmp = ""
        except OSError as exc:
            raise _os_error(exc, f"cannot write {name}") from None
        finally:
            if tmp:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        st = os.stat(path)
        return self._info_of(name, st, path)

    @staticmethod
    def _set_info(fd: int, info: dict[str, str]) -> None:
        if not info:
            return
        try:
            os.setxattr(fd, XATTR, json.dumps(info, sort_keys=True).encode())
        except OSError as exc:
            if exc.errno not in _NO_XATTR:
                raise
            # No user xattrs here: the info is dropped, as documented.

    def _place(self, tmp: str, path: str, name: str) -> None:
        parent = os.path.dirname(path)
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidName(f"{name}: a parent of it is a file in this directory store") from None
        if os.path.isdir(path):
            raise InvalidName(f"{name} is a directory (it has objects below it)")
        os.rename(tmp, path)
        try:
            dfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass  # some filesystems refuse fsync on directories; the rename is done

    def upload_file(
        self,
        name: str,
        path: str,
        info: dict[str, str],
        progress: Callable[[int], None] | None = None,
        sha1: str | None = None,  # not needed: a local copy has nothing to check it against
    ) -> ObjectInfo:
        def fill(dst: BinaryIO) -> None:
            with open(path, "rb") as src:
                if progress is None:
                    shutil.copyfileobj(src, dst, _COPY_CHUNK)
                    return
                done = 0
                while chunk := src.read(_COPY_CHUNK):
                    dst.write(chunk)
                    done += len(chunk)
                    progress(done)

        return self._write(name, fill, info)

    def upload_bytes(self, name: str, data: bytes, info: dict[str, str]) -> ObjectInfo:
        return self._write(name, lambda dst: dst.write(data), info)

    def copy(
        self, src: ObjectInfo, dst_name: str, info: dict[str, str] | None = None
    ) -> ObjectInfo:
        self._path(dst_name)  # validate before opening anything
        if info is not None:
            validate_info(info)
        with self._open_version(src) as f:
            current = self._info_of(src.name, os.fstat(f.fileno()), f.fileno())
            info = dict(current.info if info is None else info)
            out = self._write(dst_name, lambda dst: shutil.copyfileobj(f, dst, _COPY_CHUNK), info)
        if MTIME_KEY not in info:
            # Keep the source's mtime, as a B2 copy keeps its src_last_modified_millis.
            ns = current.mtime_ms * 1_000_000
            path = self._path(dst_name)
            os.utime(path, ns=(ns, ns))
            out = self._info_of(dst_name, os.stat(path), path)
        return out

    def update_info(self, obj: ObjectInfo, info: dict[str, str]) -> ObjectInfo:
        # One setxattr replaces the whole value atomically; the bytes are not touched.
        validate_info(info)
        try:
            with self._open_version(obj) as f:
                fd = f.fileno()
                if info:
                    self._set_info(fd, info)
                else:
                    try:
                        os.removexattr(fd, XATTR)
                    except OSError:
                        pass  # none there
                if MTIME_KEY in info:
                    try:
                        ns = int(info[MTIME_KEY]) * 1_000_000
                        os.utime(fd, ns=(ns, ns))
                    except ValueError:
                        pass
                os.fsync(fd)
                return self._info_of(obj.name, os.fstat(fd), fd)
        except OSError as exc:
            raise _os_error(exc, f"cannot update the file info of {obj.name}") from None

    # --- removing ----------------------------------------------------------------------

    def _prune(self, path: str) -> None:
        """Remove directories left empty above ``path``, never the root."""
        d = os.path.dirname(path)
        while len(d) > len(self.root) and d.startswith(self.root + os.sep):
            try:
                os.rmdir(d)
            except OSError:
                return
            d = os.path.dirname(d)

    def hide(self, name: str) -> None:
        path = self._path(name)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # a "directory" is only prefixes of other objects: nothing to hide
        except OSError as exc:
            raise _os_error(exc, f"cannot delete {name}") from None
        self._prune(path)

    def delete_version(self, obj: ObjectInfo) -> None:
        path = self._path(obj.name)
        cur = self.stat(obj.name)
        if cur is None or cur.version_id != obj.version_id:
            raise NotFound(f"{obj.name}: version {obj.version_id} does not exist")
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise NotFound(f"{obj.name}: version {obj.version_id} does not exist") from None
        except OSError as exc:
            raise _os_error(exc, f"cannot delete {obj.name}") from None
        self._prune(path)

    def versions(self, name: str) -> list[ObjectInfo]:
        cur = self.stat(name)
        return [cur] if cur is not None else []
