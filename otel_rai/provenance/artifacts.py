"""The artifact store: each fitted model that decided, saved once, by fingerprint, for `reproduce`.

Layout, under a directory or any fsspec URL::

    <fingerprint>/manifest.json              what was saved, with the SHA-256 of every file
    <fingerprint>/model.<sha256>.skops       the model: skops where the model allows it, else .joblib
    <fingerprint>/background.<sha256>.skops  register_model(background=) rows, when given

Files are named by their SHA-256, so writers never overwrite each other's bytes; the manifest is written
last (on a local disk, atomically), so a manifest always describes complete files.

**Saving** (`save`) happens off the caller's thread. The bytes are loaded back in memory and the copy
must have the same fingerprint before anything is written: what the store holds under a fingerprint is
that model, even if the application refits it meanwhile. skops is tried first; joblib (pickle) when skops
cannot represent the model or its copy differs.

**Loading** (`load`) is where pickle's risk lies: unpickling a file can run any code in it. So:

* the store must be trusted. A local directory is, when it and everything read below it is owned by
  this user (or root), is no symlink, and cannot be written by group or others (0700 and 0600 as this
  module creates them). A remote (fsspec) store is trusted only when the caller says so
  (``trust_remote=True``, ``otel-rai reproduce --trust-remote-artifacts``);
* the bytes must have the SHA-256 of the model record (a record in the chained audit trail), else the
  manifest's, before they are deserialised;
* skops files are loaded with only the types skops itself trusts, those of numpy, scipy, scikit-learn,
  xgboost and lightgbm, and the ones the caller names (`trusted_types`);
* the loaded model must have the fingerprint asked for.

Nothing that fails a check is ever loaded; each failure is an `ArtifactError` that says which check.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import stat
import urllib.parse
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from otel_rai import settings
from otel_rai.errors import ArtifactError

MANIFEST = "manifest.json"
FORMAT = "otel-rai model artifact"
MANIFEST_VERSION = 1
#: Where the artifacts go by default: this directory beside the audit store (or in the data directory).
DEFAULT_NAME = "artifacts"
#: Top-level modules whose types a skops file may hold without the caller naming them.
TRUSTED_MODULES = frozenset({"numpy", "scipy", "sklearn", "xgboost", "lightgbm", "collections", "builtins"})
SERIALIZERS = ("skops", "joblib")
_EXTENSIONS = {"skops": ".skops", "joblib": ".joblib"}
#: Owner-only, like the audit store.
_DIR_MODE, _FILE_MODE = 0o700, 0o600
_HEX = frozenset("0123456789abcdef")

FingerprintOf = Callable[[Any], str]


def default_location(store_path: Path | None) -> Path:
    """The default artifact store: ``artifacts`` beside the audit store, else in the data directory."""
    return (store_path.parent if store_path is not None else settings.data_dir()) / DEFAULT_NAME


def resolve(artifacts: str | os.PathLike[str] | bool | None, store_path: Path | None) -> ArtifactStore | None:
    """The store the `artifacts` setting names (a path, an fsspec URL, True/None for the default, False
    for none); `store_path` is the audit store (or spool) the default goes beside."""
    if artifacts is False:
        return None
    if artifacts is None or artifacts is True:
        return ArtifactStore(default_location(store_path))
    return ArtifactStore(artifacts)


def sha256(data: bytes) -> str:
    """Hex SHA-256 of `data`: what the manifest and the model record name."""
    return hashlib.sha256(data).hexdigest()


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "unknown"


# --- serialising ---------------------------------------------------------------------------------


def dumps(obj: Any, serializer: str) -> bytes:
    """`obj` written by `serializer` (``skops`` or ``joblib``)."""
    if serializer == "skops":
        import skops.io as sio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sio.dumps(obj)
    import joblib

    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


def loads(data: bytes, serializer: str, trusted_types: Sequence[str] = (), *, own: bool = False) -> Any:
    """Deserialise `data`. `own`: bytes this process just made (every type they hold is trusted).
    Otherwise skops files are refused if they hold a type outside `TRUSTED_MODULES` and `trusted_types`."""
    if serializer == "skops":
        import skops.io as sio

        found = sio.get_untrusted_types(data=data)
        if not own:
            refused = [t for t in found if t.split(".")[0] not in TRUSTED_MODULES and t not in trusted_types]
            if refused:
                raise ArtifactError(f"the skops file holds the type {refused[0]!r}, which is not trusted; "
                                    "name it in trusted_types (--trust-type) if you trust it")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sio.loads(data, trusted=found)
    import joblib

    return joblib.load(io.BytesIO(data))


def serialize(model: Any, fingerprint: str, fingerprint_of: FingerprintOf) -> tuple[str, bytes]:
    """(serializer, bytes) of `model`: the first of `SERIALIZERS` whose bytes load back into a model
    with `fingerprint`. `ArtifactError` if none does (the model changed meanwhile, or cannot be saved)."""
    reasons = []
    for serializer in SERIALIZERS:
        try:
            data = dumps(model, serializer)
            copy = loads(data, serializer, own=True)
        except ImportError:
            reasons.append(f"{serializer}: not installed")
            continue
        except Exception as exc:
            reasons.append(f"{serializer}: {type(exc).__name__}")
            continue
        if fingerprint_of(copy) == fingerprint:
            return serializer, data
        reasons.append(f"{serializer}: the copy has another fingerprint")
    raise ArtifactError(f"model {fingerprint} cannot be saved ({'; '.join(reasons)})")


def serialize_data(value: Any) -> tuple[str, bytes]:
    """(serializer, bytes) of background rows: skops for arrays, else joblib."""
    try:
        data = dumps(value, "skops")
        loads(data, "skops")  # only trusted types: plain arrays
        return "skops", data
    except Exception:  # a DataFrame, or skops missing
        return "joblib", dumps(value, "joblib")


# --- the store -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Saved:
    """What `save` stored (or found) for a fingerprint."""

    sha256: str
    format: str  # "skops/0.16.0" or "joblib/1.5.2"
    uri: str
    background_sha256: str | None = None
    written: bool = True  # False: the store had it already


@dataclass(frozen=True)
class Status:
    """What the store holds for a fingerprint, checked without deserialising anything."""

    state: str  # "saved", "missing", "damaged" or "untrusted"
    detail: str
    format: str | None = None
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Loaded:
    """A model that passed every check of `ArtifactStore.load`, with its background rows (or None)."""

    model: Any
    background: Any
    sha256: str
    format: str
    uri: str


class ArtifactStore:
    """A directory or fsspec URL holding model artifacts by fingerprint."""

    def __init__(self, location: str | os.PathLike[str]) -> None:
        text = os.fspath(location)
        parts = urllib.parse.urlsplit(text)
        self._path: Path | None = None
        self._fs: Any = None
        if isinstance(location, Path) or not parts.scheme or len(parts.scheme) == 1:  # a path (C: on Windows)
            self._path = Path(text).expanduser()
        elif parts.scheme == "file":
            self._path = Path(urllib.parse.unquote(parts.path))
        self.url = str(self._path) if self._path is not None else text

    @property
    def remote(self) -> bool:
        """Whether the store is an fsspec URL (never trusted implicitly) rather than a local directory."""
        return self._path is None

    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            try:
                import fsspec
            except ImportError:
                raise ArtifactError(f"the artifact store {self.url} needs fsspec: "
                                    "pip install 'otel-rai[artifacts]'") from None
            try:
                self._fs, self._root = fsspec.core.url_to_fs(self.url)
            except (ValueError, ImportError) as exc:
                raise ArtifactError(f"cannot open the artifact store {self.url}: {exc}") from None
        return self._fs, self._root.rstrip("/")

    def _where(self, fingerprint: str, name: str = "") -> str:
        _check_fingerprint(fingerprint)
        if self._path is not None:
            return str(self._path / fingerprint / name) if name else str(self._path / fingerprint)
        _, root = self._filesystem()
        return f"{root}/{fingerprint}/{name}" if name else f"{root}/{fingerprint}"

    def uri(self, fingerprint: str, name: str = "") -> str:
        """Where a file of `fingerprint` is, for records and messages."""
        if self._path is not None:
            return self._where(fingerprint, name)
        return f"{self.url.rstrip('/')}/{fingerprint}" + (f"/{name}" if name else "")

    # --- raw files ---

    def _read(self, fingerprint: str, name: str) -> bytes | None:
        where = self._where(fingerprint, name)
        try:
            if self._path is not None:
                return Path(where).read_bytes()
            fs, _ = self._filesystem()
            return fs.cat_file(where)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"cannot read {self.uri(fingerprint, name)}: {exc.strerror or exc}") from None

    def _write(self, fingerprint: str, name: str, data: bytes, *, replace: bool = False) -> None:
        where = self._where(fingerprint, name)
        if self._path is None:
            fs, _ = self._filesystem()
            fs.makedirs(self._where(fingerprint), exist_ok=True)
            if replace or not fs.exists(where):
                fs.pipe_file(where, data)
            return
        directory = Path(self._where(fingerprint))
        self._path.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
        directory.mkdir(exist_ok=True, mode=_DIR_MODE)
        target = Path(where)
        if target.exists() and not replace:
            return
        temporary = directory / f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def manifest(self, fingerprint: str) -> dict[str, Any] | None:
        """The manifest of `fingerprint`, or None when nothing was saved for it."""
        data = self._read(fingerprint, MANIFEST)
        if data is None:
            return None
        try:
            manifest = json.loads(data)
        except ValueError:
            raise ArtifactError(f"{self.uri(fingerprint, MANIFEST)} is not JSON") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArtifactError(f"{self.uri(fingerprint, MANIFEST)} is not an otel-rai artifact manifest")
        if manifest.get("fingerprint") != fingerprint:
            raise ArtifactError(f"{self.uri(fingerprint, MANIFEST)} describes model "
                                f"{str(manifest.get('fingerprint'))[:40]!r}, not {fingerprint}")
        return manifest

    # --- saving ---

    def save(self, fingerprint: str, model: Any, fingerprint_of: FingerprintOf, background: Any = None) -> Saved:
        """Save `model` under `fingerprint` unless a complete artifact is there already."""
        try:
            existing = self.manifest(fingerprint)
        except ArtifactError:
            existing = None  # damaged: written anew
        if existing is not None:
            entry = existing["model"]
            data = self._read(fingerprint, entry["file"])
            if data is not None and sha256(data) == entry["sha256"]:
                background_entry = existing.get("background") or {}
                return Saved(entry["sha256"], f"{entry['serializer']}/{entry['serializer_version']}",
                             self.uri(fingerprint, entry["file"]), background_entry.get("sha256"), written=False)
        serializer, data = serialize(model, fingerprint, fingerprint_of)
        entry = self._put(fingerprint, "model", serializer, data)
        background_entry = None
        if background is not None:
            background_entry = self._put(fingerprint, "background", *serialize_data(background))
        manifest = {
            "format": FORMAT, "version": MANIFEST_VERSION, "fingerprint": fingerprint,
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": entry, "background": background_entry,
        }
        self._write(fingerprint, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode(), replace=True)
        return Saved(entry["sha256"], f"{serializer}/{entry['serializer_version']}",
                     self.uri(fingerprint, entry["file"]),
                     None if background_entry is None else background_entry["sha256"])

    def _put(self, fingerprint: str, stem: str, serializer: str, data: bytes) -> dict[str, Any]:
        digest = sha256(data)
        name = f"{stem}.{digest}{_EXTENSIONS[serializer]}"
        self._write(fingerprint, name, data)
        return {"file": name, "sha256": digest, "bytes": len(data), "serializer": serializer,
                "serializer_version": _version(serializer)}

    # --- checking and loading ---

    def check_trusted(self, fingerprint: str, names: Sequence[str] = (), *, trust_remote: bool = False) -> None:
        """`ArtifactError` unless files may be loaded from this store (see the module docstring)."""
        if self._path is None:
            if not trust_remote:
                raise ArtifactError(f"refusing to load a model from the remote artifact store {self.url}: loading "
                                    "a model file can run code; trust it explicitly (--trust-remote-artifacts)")
            return
        for path in [self._path, Path(self._where(fingerprint))] + [Path(self._where(fingerprint, n)) for n in names]:
            _check_owned(path)

    def _find(self, fingerprint: str, sha: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """(the model's entry, the background's entry) for `fingerprint`: the file whose name carries the
        recorded digest `sha`, else the manifest's."""
        manifest = self.manifest(fingerprint)
        if manifest is None:
            raise ArtifactError(f"no artifact of model {fingerprint} in {self.url}")
        entry = manifest.get("model") or {}
        if sha is not None and entry.get("sha256") != sha:
            for serializer, extension in _EXTENSIONS.items():  # another process's save of the same model
                name = f"model.{sha}{extension}"
                if self._read(fingerprint, name) is not None:
                    entry = {"file": name, "sha256": sha, "serializer": serializer, "serializer_version": "?"}
                    break
            else:
                raise ArtifactError(f"the artifact of model {fingerprint} in {self.url} is not the one its record "
                                    f"names (SHA-256 {sha[:16]}…, the store has {str(entry.get('sha256'))[:16]}…)")
        if not isinstance(entry.get("file"), str) or entry.get("serializer") not in SERIALIZERS:
            raise ArtifactError(f"{self.uri(fingerprint, MANIFEST)} names no model file")
        return entry, manifest.get("background")

    def status(self, fingerprint: str, sha: str | None = None) -> Status:
        """Whether the artifact of `fingerprint` is there and has its digest (the record's `sha`, else
        the manifest's). Reads and hashes the bytes; deserialises nothing."""
        try:
            entry, _ = self._find(fingerprint, sha)
            if self._path is not None:
                self.check_trusted(fingerprint, [MANIFEST, entry["file"]])
            data = self._read(fingerprint, entry["file"])
        except ArtifactError as exc:
            text = str(exc).removeprefix("otel-rai: ")
            if "no artifact" in text:
                return Status("missing", text)
            return Status("untrusted" if "refusing" in text else "damaged", text)
        if data is None:
            return Status("missing", f"{self.uri(fingerprint, entry['file'])} is missing")
        digest = sha256(data)
        if digest != entry["sha256"]:
            return Status("damaged", f"{self.uri(fingerprint, entry['file'])} has SHA-256 {digest[:16]}…, "
                          f"not {entry['sha256'][:16]}…", entry["serializer"], len(data), digest)
        return Status("saved", f"{self.uri(fingerprint, entry['file'])}, SHA-256 verified", entry["serializer"],
                      len(data), digest)

    def load(self, fingerprint: str, *, fingerprint_of: FingerprintOf, sha: str | None = None,
             background_sha: str | None = None, trust_remote: bool = False,
             trusted_types: Sequence[str] = ()) -> Loaded:
        """The model saved under `fingerprint` (and its background rows, if saved), after every check of the
        module docstring; `sha` and `background_sha` are the digests the model record names."""
        entry, background_entry = self._find(fingerprint, sha)
        if background_sha is not None and (background_entry or {}).get("sha256") != background_sha:
            raise ArtifactError(f"the background rows of model {fingerprint} in {self.url} are not the ones its "
                                f"record names (SHA-256 {background_sha[:16]}…)")
        names = [entry["file"]] + ([background_entry["file"]] if background_entry else [])
        self.check_trusted(fingerprint, [MANIFEST, *names], trust_remote=trust_remote)
        data = self._read(fingerprint, entry["file"])
        if data is None:
            raise ArtifactError(f"{self.uri(fingerprint, entry['file'])} is missing")
        digest = sha256(data)
        if digest != entry["sha256"]:
            raise ArtifactError(f"refusing to load {self.uri(fingerprint, entry['file'])}: its SHA-256 is "
                                f"{digest[:16]}…, not the recorded {entry['sha256'][:16]}…")
        try:
            model = loads(data, entry["serializer"], trusted_types)
        except ArtifactError:
            raise
        except Exception as exc:
            raise ArtifactError(f"cannot load {self.uri(fingerprint, entry['file'])} ({type(exc).__name__})") from None
        found = fingerprint_of(model)
        if found != fingerprint:
            raise ArtifactError(f"refusing the model in {self.uri(fingerprint, entry['file'])}: its fingerprint is "
                                f"{found}, not {fingerprint}")
        background = None
        if background_entry:
            raw = self._read(fingerprint, background_entry["file"])
            if raw is None or sha256(raw) != background_entry.get("sha256"):
                raise ArtifactError(f"refusing to load {self.uri(fingerprint, background_entry['file'])}: it is "
                                    "missing or its SHA-256 is not the recorded one")
            background = loads(raw, background_entry["serializer"], trusted_types)
        return Loaded(model, background, digest, f"{entry['serializer']}/{entry.get('serializer_version', '?')}",
                      self.uri(fingerprint, entry["file"]))


def _check_fingerprint(fingerprint: str) -> None:
    """A fingerprint is 32 hex digits: never a path (``../``) into or out of the store."""
    if not (isinstance(fingerprint, str) and len(fingerprint) == 32 and set(fingerprint) <= _HEX):
        raise ArtifactError(f"{str(fingerprint)[:40]!r} is not a model fingerprint (32 hex digits)")


def _check_owned(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # a missing file fails later, as missing
    except OSError as exc:
        raise ArtifactError(f"cannot check {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ArtifactError(f"refusing to load from {path}: it is a symbolic link")
    if hasattr(os, "geteuid") and st.st_uid not in (os.geteuid(), 0):
        raise ArtifactError(f"refusing to load from {path}: it is owned by uid {st.st_uid}, not by you")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ArtifactError(f"refusing to load from {path}: others can write it "
                            f"(mode {stat.S_IMODE(st.st_mode):o}; chmod go-w)")
