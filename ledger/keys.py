"""Ed25519 keys on disk: the ledger's own key and agencies' locally held keys.

Private keys live in files readable only by their owner (0600) and are never
printed, logged or stored in the database; a file others can read is refused.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from . import files
from .errors import KeyFileError
from .verify import b64decode, b64encode, key_id_of, signing_message

LEDGER_KEY_FILE = "ledger.key"


@dataclass(frozen=True)
class Signer:
    """A private key with its id; signs event bodies with the domain-separation prefix."""

    private_key: Ed25519PrivateKey

    @property
    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()

    @property
    def public_b64(self) -> str:
        return b64encode(self.public_bytes)

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_bytes)

    def sign_body(self, body_bytes: bytes) -> bytes:
        return self.private_key.sign(signing_message(body_bytes))

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    @functools.cached_property
    def salt_key(self) -> bytes:
        """Secret for narrative salts: a retry of one event seals to the same body."""
        raw = self.private_key.private_bytes_raw()
        return hashlib.sha256(b"response-ledger/v2/narrative-salt\n" + raw).digest()


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_or_generate_key_file(path: Path) -> Signer:
    """The key in `path`, created first if there is none. Processes starting together
    (a server's workers, say) all end up with the one key that was written first."""
    return load_key_bytes(
        path, create_private(path, lambda: _private_pem(Ed25519PrivateKey.generate()))
    )


def install_key_file(new: Path, path: Path) -> None:
    """Give the key file `new` the name `path`, keeping the key that had it as
    `NAME.KEYID.retired` beside it (named by its key, so no retired key is ever
    written over)."""
    if path.exists():
        data = read_private(path)
        stem = path.name.removesuffix(".key")
        retired = path.with_name(f"{stem}.{load_key_bytes(path, data).key_id[:16]}.retired")
        create_private(retired, lambda: data)  # there already if this key was retired before
    try:
        os.replace(new, path)
        files.sync_directory(path.parent)
    except OSError as e:
        raise KeyFileError(f"cannot install key file {path}: {e.strerror}") from None


def create_private(path: Path, make: Callable[[], bytes]) -> bytes:
    """What `path` holds; if there is no such file, `make()` written to a new one only
    its owner may read (0600, directory 0700), unless another process creates it
    meanwhile. An existing file is never written over."""
    if path.exists():
        return read_private(path)
    data = make()
    return data if _create_once(path, data) else read_private(path)


def _create_once(path: Path, data: bytes) -> bool:
    """`files.create_once` in a private directory, its failures a key file error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return files.create_once(path, data)
    except OSError as e:
        raise KeyFileError(f"cannot write key file {path}: {e.strerror}") from None


def read_private(path: Path) -> bytes:
    """A key file's bytes, refusing one that group or others can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    return data


def load_key_file(path: Path) -> Signer:
    """Load a private key file, refusing one that group or others can read."""
    return load_key_bytes(path, read_private(path))


def load_key_bytes(path: Path, data: bytes) -> Signer:
    """The key in `data`, read from `path` (named in errors)."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyFileError(f"key file {path} is not an unencrypted PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path} does not hold an Ed25519 key")
    return Signer(key)


def parse_public_key(text: str) -> bytes:
    """Raw 32-byte public key from base64 or from a PEM file's path or contents."""
    candidate = text.strip()
    if not candidate.startswith("-----BEGIN") and Path(candidate).is_file():
        candidate = Path(candidate).read_text().strip()
    if candidate.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(candidate.encode())
        except ValueError as e:
            raise KeyFileError(f"not a PEM public key: {e}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError("public key is not Ed25519")
        return key.public_bytes_raw()
    try:
        raw = b64decode(candidate)
    except ValueError:
        raise KeyFileError("public key is neither PEM nor base64") from None
    if len(raw) != 32:
        raise KeyFileError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw
