"""Checkpoint keys: HMAC-SHA256 secrets and Ed25519 keys (with the optional ``cryptography``), the
`Signer` a chain signs its checkpoints with, and `read_keys` for a verifier.

An HMAC secret is stretched like the input hash key (`otel_rai.audit.hashing.derive`, purpose
``checkpoint``): its key id is an HMAC under the stretched key and says nothing else about it. Earlier
versions signed with the material itself and named it by a plain digest (`LEGACY`); a verifier given
a secret tries both (`HmacKey.variants`)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Iterable, Protocol

from otel_rai import semconv
from otel_rai.audit.hashing import derive, material_bytes

#: How checkpoints were signed before secrets were stretched.
LEGACY = "v1"


class Signer(Protocol):
    """What a chain signs its checkpoints with: `HmacKey` or `Ed25519Key`."""

    algorithm: str
    key_id: str

    def sign(self, message: bytes) -> str:
        """The signature of `message`, as hex."""


class HmacKey:
    """A shared secret for HMAC-SHA256 checkpoint signatures. `repr` never shows the secret."""

    algorithm = semconv.CHECKPOINT_ALGORITHM_HMAC

    def __init__(self, material: str | bytes, scheme: str = "v2") -> None:
        try:
            raw = material_bytes(material)
        except ValueError:
            raise ValueError("otel-rai: the checkpoint key is empty") from None
        if scheme == LEGACY:
            self._secret = raw
            self.key_id = hashlib.blake2b(raw, digest_size=8, person=b"otel-rai.ckpt").hexdigest()
        else:
            self._secret, self.key_id = derive(raw, b"checkpoint")

    @classmethod
    def variants(cls, material: str | bytes) -> list[HmacKey]:
        """The key of `material` as this version signs and as earlier ones did."""
        return [cls(material), cls(material, LEGACY)]

    def __repr__(self) -> str:
        return f"HmacKey(key_id={self.key_id!r})"

    def sign(self, message: bytes) -> str:
        """HMAC-SHA256 of `message`, as 64 hex digits."""
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def verify(self, message: bytes, signature: str) -> bool:
        """Whether `signature` is this key's for `message` (constant-time)."""
        return hmac.compare_digest(self.sign(message), signature)


def _ed25519_key_id(public_raw: bytes) -> str:
    return hashlib.blake2b(public_raw, digest_size=8, person=b"otel-rai.ed25519").hexdigest()


class Ed25519Key:
    """An Ed25519 key (``pip install cryptography``): a private key signs, a public key verifies."""

    algorithm = semconv.CHECKPOINT_ALGORITHM_ED25519

    def __init__(self, key: Any) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        if isinstance(key, ed25519.Ed25519PrivateKey):
            self._private: Any = key
            self._public = key.public_key()
        elif isinstance(key, ed25519.Ed25519PublicKey):
            self._private, self._public = None, key
        else:
            raise TypeError("otel-rai: expected an Ed25519 private or public key of the cryptography package")
        raw = self._public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = _ed25519_key_id(raw)

    def __repr__(self) -> str:
        return f"Ed25519Key(key_id={self.key_id!r})"

    @classmethod
    def from_pem(cls, data: bytes) -> Ed25519Key:
        """A PEM public or private key."""
        from cryptography.hazmat.primitives import serialization

        try:
            loaded: Any = serialization.load_pem_public_key(data)
        except ValueError:
            loaded = serialization.load_pem_private_key(data, password=None)
        return cls(loaded)

    def sign(self, message: bytes) -> str:
        """The Ed25519 signature of `message`, as hex; ValueError for a public key."""
        if self._private is None:
            raise ValueError("otel-rai: an Ed25519 public key cannot sign")
        return self._private.sign(message).hex()

    def verify(self, message: bytes, signature: str) -> bool:
        """Whether `signature` (hex) is valid for `message` under the public key; False for malformed hex."""
        from cryptography.exceptions import InvalidSignature

        try:
            self._public.verify(bytes.fromhex(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True


def signer(key: Any) -> Signer | None:
    """The checkpoint signer for `key`: None, a secret (str or bytes: HMAC-SHA256), an `HmacKey`, or an
    Ed25519 private key of the ``cryptography`` package (or an `Ed25519Key`)."""
    if key is None or isinstance(key, (HmacKey, Ed25519Key)):
        return key
    if isinstance(key, (str, bytes)):
        return HmacKey(key)
    return Ed25519Key(key)


def read_keys(materials: Iterable[str], key_files: Iterable[str], public_keys: Iterable[str]) -> dict[str, Any]:
    """Checkpoint keys by key id: HMAC secrets given directly or one per line of a file, and Ed25519 PEM
    keys (public or private)."""
    keys: list[Any] = [k for m in materials if m for k in HmacKey.variants(m)]
    for path in key_files:
        with open(path, encoding="utf-8") as f:
            keys += [k for line in f if line.strip() for k in HmacKey.variants(line.strip())]
    for path in public_keys:
        with open(path, "rb") as f:
            keys.append(Ed25519Key.from_pem(f.read()))
    return {k.key_id: k for k in keys}
