"""
Tests for L{bwcd.datastore.crypto}: st2's keyczar-compatible format, checked
against an independent construction of the algorithm and a fixed vector, and
the key file's creation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import threading

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from twisted.trial.unittest import SynchronousTestCase

from bwcd.datastore import crypto
from bwcd.datastore.crypto import AESKey, CryptoError

AES_BYTES = bytes(range(32))
HMAC_BYTES = bytes(range(32, 64))
IV = bytes(range(100, 116))
PLAINTEXT = "s3cr\u00e9t value"

# An st2 key file for the keys above, written by hand in st2's layout.
KEY_FILE_TEXT = (
    '{"hmacKey": {"hmacKeyString": "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8", "size": 256}, '
    '"aesKeyString": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "mode": "CBC", "size": 256}'
)

# PLAINTEXT under the key above with IV: 5 ASCII zeros, IV, AES-CBC, HMAC-SHA1.
VECTOR = (
    "30303030306465666768696A6B6C6D6E6F707172731CDFB5B8406E02C125562B4AD4AF80"
    "410DDC2EB5A7A1052A5685AA051BA34F07C0F5B8B8"
)


def st2Encrypt(aesKey: bytes, hmacKey: bytes, iv: bytes, plaintext: str) -> str:
    """
    st2's util/crypto.py algorithm, rebuilt here from its description (not
    from bwcd's code) so that a drift in either shows.
    """
    data = plaintext.encode("utf-8")
    pad = 16 - len(data) % 16
    data += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(aesKey), modes.CBC(iv)).encryptor()
    message = b"00000" + iv + encryptor.update(data) + encryptor.finalize()
    return (message + hmac.new(hmacKey, message, hashlib.sha1).digest()).hex().upper()


def fixedRandom(*chunks: bytes):
    pending = list(chunks)

    def randomBytes(n: int) -> bytes:
        chunk = pending.pop(0)
        assert len(chunk) == n, (len(chunk), n)
        return chunk

    return randomBytes


class FormatTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.key = crypto.parseKey(KEY_FILE_TEXT)

    def test_keyFileParsed(self) -> None:
        """
        An st2 key file gives the AES and HMAC key bytes and sizes it holds.
        """
        self.assertEqual((self.key.aesKey, self.key.hmacKey, self.key.size, self.key.hmacKeySize, self.key.mode), (AES_BYTES, HMAC_BYTES, 256, 256, "CBC"))

    def test_vectorIsSt2Algorithm(self) -> None:
        """
        The fixed vector is what st2's algorithm gives (guards the test's own
        reference construction).
        """
        self.assertEqual(st2Encrypt(AES_BYTES, HMAC_BYTES, IV, PLAINTEXT), VECTOR)

    def test_encryptMatchesSt2ByteForByte(self) -> None:
        """
        With the same IV, bwcd's ciphertext is st2's exactly: header, IV,
        ciphertext, HMAC-SHA1, upper-case hex.
        """
        self.assertEqual(crypto.encrypt(self.key, PLAINTEXT, randomBytes=fixedRandom(IV)), VECTOR)

    def test_decryptSt2Ciphertext(self) -> None:
        """
        A ciphertext made by st2's algorithm decrypts, in upper or lower case.
        """
        self.assertEqual(crypto.decrypt(self.key, VECTOR), PLAINTEXT)
        self.assertEqual(crypto.decrypt(self.key, VECTOR.lower()), PLAINTEXT)
        other = st2Encrypt(AES_BYTES, HMAC_BYTES, bytes(16), "")
        self.assertEqual(crypto.decrypt(self.key, other), "")

    def test_roundTripAndShape(self) -> None:
        """
        Random-IV ciphertexts decrypt, differ each time, start with the hex
        of C{00000} and are 2*(5+16+16k+20) characters long.
        """
        key = crypto.generateKey()
        first = crypto.encrypt(key, "hello world!")
        second = crypto.encrypt(key, "hello world!")
        self.assertNotEqual(first, second)
        self.assertEqual(crypto.decrypt(key, first), "hello world!")
        self.assertTrue(first.startswith("3030303030"))
        self.assertEqual(len(first), 114)
        self.assertEqual(first, first.upper())

    def test_tampering(self) -> None:
        """
        A flipped byte, a wrong key, a short value or non-hex text are
        refused with st2's messages where it has them.
        """
        flipped = VECTOR[:60] + ("0" if VECTOR[60] != "0" else "1") + VECTOR[61:]
        self.assertRaises(CryptoError, crypto.decrypt, self.key, flipped)
        self.assertRaises(CryptoError, crypto.decrypt, crypto.generateKey(), VECTOR)
        e = self.assertRaises(CryptoError, crypto.decrypt, self.key, "3030303030" + "00" * 20)
        self.assertEqual(str(e), "Invalid or malformed ciphertext (too short)")
        e = self.assertRaises(CryptoError, crypto.decrypt, self.key, "plain-value!")
        self.assertIn("Non-hexadecimal digit found", str(e))

    def test_keyRepr(self) -> None:
        """
        A key's repr never shows key material.
        """
        self.assertNotIn(base64.urlsafe_b64encode(AES_BYTES).decode()[:10], repr(self.key))
        self.assertEqual(repr(self.key), "<AESKey hmac_key_size=256,mode=CBC,size=256>")

    def test_toJsonIsSt2Layout(self) -> None:
        """
        A key written back is st2's JSON with unpadded web-safe base64.
        """
        self.assertEqual(json.loads(self.key.toJson()), json.loads(KEY_FILE_TEXT))
        generated = json.loads(crypto.generateKey(randomBytes=fixedRandom(b"\xfb\xef\xbe" * 10 + b"\xfb\xef", b"\xff" * 32)).toJson())
        self.assertEqual(generated["aesKeyString"], "-" * 42 + "8")
        self.assertEqual(generated["hmacKey"], {"hmacKeyString": "_" * 42 + "8", "size": 256})
        self.assertEqual((generated["mode"], generated["size"]), ("CBC", 256))

    def test_demoKeySize128(self) -> None:
        """
        A 128-bit key file (like st2's demo key) works; smaller sizes, other
        modes and missing fields are refused with st2's messages.
        """
        small = json.dumps(
            {"hmacKey": {"hmacKeyString": crypto.b64wsEncode(b"h" * 16), "size": 128}, "aesKeyString": crypto.b64wsEncode(b"a" * 16), "mode": "CBC", "size": 128}
        )
        key = crypto.parseKey(small)
        self.assertEqual(crypto.decrypt(key, crypto.encrypt(key, "x")), "x")
        self.assertEqual(crypto.decrypt(key, st2Encrypt(b"a" * 16, b"h" * 16, IV, "x")), "x")
        e = self.assertRaises(CryptoError, crypto.parseKey, small.replace('"size": 128}', '"size": 64}'))
        self.assertEqual(str(e), "Unsafe key size: 64")
        e = self.assertRaises(CryptoError, crypto.parseKey, KEY_FILE_TEXT.replace("CBC", "ECB"))
        self.assertEqual(str(e), "Unsupported mode: ECB")
        e = self.assertRaises(CryptoError, crypto.parseKey, '{"hmacKey": {}}', "/k.json")
        self.assertEqual(str(e), "Invalid or malformed key file \"/k.json\": 'aesKeyString'")

    def test_base64Whitespace(self) -> None:
        """
        Whitespace inside key strings is ignored, as keyczar does.
        """
        self.assertEqual(crypto.b64wsDecode(" AAEC\nAwQF "), bytes(range(6)))


class KeyFileTests(SynchronousTestCase):
    def test_createdPrivate(self) -> None:
        """
        The key file is created with mode 0600 (in a new 0700 directory),
        holds st2's JSON, and is read back as the same key.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "keys", "datastore_key.json")
        old = os.umask(0)
        try:
            key = crypto.ensureKeyFile(path)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        with open(path) as f:
            self.assertEqual(crypto.parseKey(f.read()), key)
        self.assertEqual(len(key.aesKey), 32)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["datastore_key.json"])

    def test_existingKept(self) -> None:
        """
        An existing key file (an st2 one) is read, never replaced.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(KEY_FILE_TEXT)
        os.chmod(path, 0o600)
        self.assertEqual(crypto.ensureKeyFile(path).aesKey, AES_BYTES)
        self.assertFalse(crypto.writeKeyFile(path, crypto.generateKey()))
        self.assertEqual(crypto.readKeyFile(path).aesKey, AES_BYTES)
        self.assertEqual(os.listdir(os.path.dirname(path)), [os.path.basename(path)])

    def test_neverVisibleWithWiderMode(self) -> None:
        """
        While the file is being written no other user can read it: every
        file seen in the directory during creation is already 0600, and it is
        never seen empty.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "k.json")
        seen = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                for name in os.listdir(directory):
                    try:
                        st = os.stat(os.path.join(directory, name))
                    except FileNotFoundError:
                        continue
                    seen.append((name, stat.S_IMODE(st.st_mode), st.st_size))

        watcher = threading.Thread(target=watch)
        old = os.umask(0)
        watcher.start()
        try:
            for i in range(20):
                if os.path.exists(path):
                    os.unlink(path)
                crypto.ensureKeyFile(path)
        finally:
            done.set()
            watcher.join()
            os.umask(old)
        self.assertTrue(all(mode == 0o600 for _, mode, _ in seen), seen[:5])
        self.assertTrue(all(size > 0 for name, _, size in seen if name == "k.json"))

    def test_concurrentCreatorsAgree(self) -> None:
        """
        Two creators racing on one path end with one key, which both return.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "k.json")
        results = []
        threads = [threading.Thread(target=lambda: results.append(crypto.ensureKeyFile(path))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(results), 4)
        self.assertEqual(len(set(r.toJson() for r in results)), 1)

    def test_malformedFile(self) -> None:
        """
        A key file that is not JSON gives st2's "Invalid or malformed" text.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("not json")
        e = self.assertRaises(CryptoError, crypto.readKeyFile, path)
        self.assertTrue(str(e).startswith(f'Invalid or malformed key file "{path}": '))
