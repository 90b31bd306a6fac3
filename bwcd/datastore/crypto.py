# -*- test-case-name: tests.test_datastore_crypto -*-
"""
StackStorm's symmetric encryption of datastore secrets, byte for byte.

Why st2's scheme and not Fernet: secrets exported with C{st2 key list -j}
(ciphertext plus C{encrypted: true}) and existing st2 key files must keep
working here, and st2 in turn must read what bwcd encrypts.  st2 keeps the
format keyczar used (it replaced keyczar with C{cryptography} without
changing a byte):

  - key file: keyczar JSON, C{{"hmacKey": {"hmacKeyString", "size"},
    "aesKeyString", "mode": "CBC", "size"}}, key strings in URL-safe base64
    without padding;
  - value: hex, upper case, of C{b"00000"} (a 5-byte stand-in for keyczar's
    header, never checked) + 16-byte random IV + AES-CBC(PKCS#7(UTF-8
    plaintext)) + HMAC-SHA1(hmac key, everything before it).

The key file holds every secret's protection, so it is created with mode 0600
under a temporary name and linked into place: it is never readable by others,
and never seen half-written, even by a second bwcd starting at the same time.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac as _hmac
import json
import os
import stat
from hashlib import sha1
from typing import Callable

import attrs
from cryptography.hazmat.primitives import hashes, hmac, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from twisted.logger import Logger

log = Logger()

HEADER = b"00000"
HEADER_SIZE = 5
BLOCK_SIZE = 16
HMAC_SIZE = sha1().digest_size
MINIMUM_KEY_SIZE = 128
DEFAULT_KEY_SIZE = 256


class CryptoError(ValueError):
    """
    A key file or a ciphertext is unusable; the message says why.
    """


def b64wsEncode(data: bytes) -> str:
    """
    keyczar's web-safe base64: URL-safe alphabet, no C{=} padding.
    """
    return base64.urlsafe_b64encode(data).decode("ascii").replace("=", "")


def b64wsDecode(text: str) -> bytes:
    """
    Decode keyczar's web-safe base64; whitespace is ignored, padding
    optional.
    """
    cleaned = "".join(text.split())
    remainder = len(cleaned) % 4
    if remainder == 1:
        raise CryptoError("Base64 decoding errors")
    cleaned += "=" * ((4 - remainder) % 4)
    try:
        return base64.urlsafe_b64decode(cleaned.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError) as e:
        raise CryptoError(f"Base64 decoding error: {e}") from None


@attrs.frozen(repr=False)
class AESKey:
    """
    One key file's content: the AES key, the HMAC key and their declared
    sizes (kept so the file can be written back as it was).
    """

    aesKey: bytes
    hmacKey: bytes
    hmacKeySize: int = DEFAULT_KEY_SIZE
    size: int = DEFAULT_KEY_SIZE
    mode: str = "CBC"

    def __repr__(self) -> str:
        # never the key material, not even in a traceback
        return f"<AESKey hmac_key_size={self.hmacKeySize},mode={self.mode},size={self.size}>"

    def toJson(self) -> str:
        """
        The keyczar JSON key file text, as st2 writes it.
        """
        return json.dumps(
            {
                "hmacKey": {"hmacKeyString": b64wsEncode(self.hmacKey), "size": self.hmacKeySize},
                "aesKeyString": b64wsEncode(self.aesKey),
                "mode": self.mode,
                "size": self.size,
            }
        )


def generateKey(size: int = DEFAULT_KEY_SIZE, randomBytes: Callable[[int], bytes] = os.urandom) -> AESKey:
    """
    A new key as C{st2-generate-symmetric-crypto-key} makes it: C{size} bits
    of randomness each for the AES and the HMAC key.
    """
    if size < MINIMUM_KEY_SIZE:
        raise CryptoError(f"Unsafe key size: {size}")
    return AESKey(randomBytes(size // 8), randomBytes(size // 8), size, size, "CBC")


def parseKey(text: str, path: str = "<key>") -> AESKey:
    """
    Read keyczar JSON key file text.

    @raise CryptoError: C{Invalid or malformed key file "<path>": ...} for
        missing fields or bad JSON, C{Unsupported mode} or C{Unsafe key size}
        as st2 says them.
    """
    try:
        content = json.loads(text)
    except ValueError as e:
        raise CryptoError(f'Invalid or malformed key file "{path}": {e}') from None
    try:
        if not isinstance(content, dict) or not isinstance(content["hmacKey"], dict):
            raise CryptoError(f'Invalid or malformed key file "{path}": not a keyczar AES key')
        aesString = content["aesKeyString"]
        hmacString = content["hmacKey"]["hmacKeyString"]
        hmacSize = content["hmacKey"]["size"]
        mode = content["mode"]
        size = content["size"]
    except KeyError as e:
        raise CryptoError(f'Invalid or malformed key file "{path}": {e}') from None
    if not isinstance(mode, str) or mode.upper() != "CBC":
        raise CryptoError(f"Unsupported mode: {mode}")
    try:
        size, hmacSize = int(size), int(hmacSize)
    except (TypeError, ValueError):
        raise CryptoError(f'Invalid or malformed key file "{path}": sizes must be integers') from None
    if size < MINIMUM_KEY_SIZE:
        raise CryptoError(f"Unsafe key size: {size}")
    if not isinstance(aesString, str) or not isinstance(hmacString, str):
        raise CryptoError(f'Invalid or malformed key file "{path}": key strings must be strings')
    aesKey = b64wsDecode(aesString)
    if len(aesKey) not in (16, 24, 32):
        raise CryptoError(f'Invalid or malformed key file "{path}": AES key of {len(aesKey)} bytes')
    return AESKey(aesKey, b64wsDecode(hmacString), hmacSize, size, "CBC")


def readKeyFile(path: str) -> AESKey:
    """
    The key in C{path}.  A key file others may read is used but logged: it
    exposes every secret.

    @raise OSError: when it cannot be read.
    @raise CryptoError: when it is not a usable key file.
    """
    with open(path, encoding="utf-8") as f:
        mode = os.fstat(f.fileno()).st_mode
        text = f.read()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warn("Datastore key file {path} is accessible to other users (mode {mode:o}); make it 0600", path=path, mode=stat.S_IMODE(mode))
    return parseKey(text, path)


def writeKeyFile(path: str, key: AESKey) -> bool:
    """
    Write C{key} to C{path} unless a file is already there.

    The key is written and synced under a temporary name created with mode
    0600 (C{O_EXCL}, so nobody else's file is reused), then hard-linked to
    C{path}, which fails rather than replace an existing file.  Missing
    directories are created with mode 0700.

    @return: whether this call created the file (C{False}: one existed).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{binascii.hexlify(os.urandom(4)).decode()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, key.toJson().encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            # no hard links on this file system: a rename is still atomic,
            # only the "never replace" check becomes best effort
            if os.path.exists(path):
                return False
            os.rename(temporary, path)
            return True
        return True
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass


def ensureKeyFile(path: str, randomBytes: Callable[[int], bytes] = os.urandom) -> AESKey:
    """
    The key in C{path}, generated and written first when there is no file
    (bwcd's first start).  Blocking file I/O: call it once at start-up.
    """
    if not os.path.exists(path):
        if writeKeyFile(path, generateKey(randomBytes=randomBytes)):
            log.info("Created the datastore encryption key {path}", path=path)
    return readKeyFile(path)


def encrypt(key: AESKey, plaintext: str, randomBytes: Callable[[int], bytes] = os.urandom) -> str:
    """
    st2's C{symmetric_encrypt}: the upper-case hex ciphertext of
    C{plaintext}.  A fresh IV each call, so equal values encrypt differently.
    """
    padder = padding.PKCS7(BLOCK_SIZE * 8).padder()
    data = padder.update(plaintext.encode("utf-8")) + padder.finalize()
    iv = randomBytes(BLOCK_SIZE)
    encryptor = Cipher(algorithms.AES(key.aesKey), modes.CBC(iv)).encryptor()
    message = HEADER + iv + encryptor.update(data) + encryptor.finalize()
    signer = hmac.HMAC(key.hmacKey, hashes.SHA1())
    signer.update(message)
    return binascii.hexlify(message + signer.finalize()).decode("ascii").upper()


def decrypt(key: AESKey, ciphertext: str) -> str:
    """
    st2's C{symmetric_decrypt}: the plaintext of a hex ciphertext (either
    case), after checking its HMAC.

    @raise CryptoError: for anything that is not a ciphertext of this key
        (bad hex, too short, wrong signature, bad padding, not UTF-8).
    """
    try:
        raw = binascii.unhexlify(ciphertext)
    except (binascii.Error, TypeError, ValueError) as e:
        raise CryptoError(str(e)) from None
    body = raw[HEADER_SIZE:]
    if len(body) < BLOCK_SIZE + HMAC_SIZE:
        raise CryptoError("Invalid or malformed ciphertext (too short)")
    signer = hmac.HMAC(key.hmacKey, hashes.SHA1())
    signer.update(raw[:-HMAC_SIZE])
    if not _hmac.compare_digest(signer.finalize(), body[-HMAC_SIZE:]):
        raise CryptoError("Signature did not match digest.")
    iv, encrypted = body[:BLOCK_SIZE], body[BLOCK_SIZE:-HMAC_SIZE]
    if not encrypted or len(encrypted) % BLOCK_SIZE:
        raise CryptoError("Invalid or malformed ciphertext (not whole blocks)")
    decryptor = Cipher(algorithms.AES(key.aesKey), modes.CBC(iv)).decryptor()
    padded = decryptor.update(encrypted) + decryptor.finalize()
    unpadder = padding.PKCS7(BLOCK_SIZE * 8).unpadder()
    try:
        data = unpadder.update(padded) + unpadder.finalize()
        return data.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise CryptoError("Invalid or malformed ciphertext (bad padding)") from None


__all__ = [
    "AESKey",
    "CryptoError",
    "decrypt",
    "encrypt",
    "ensureKeyFile",
    "generateKey",
    "parseKey",
    "readKeyFile",
    "writeKeyFile",
]
