# -*- test-case-name: tests.test_datastore_keys -*-
"""
The datastore key as a start-up stage: read (or, at first start, create)
the key file once the state folder exists, and hand the key to the key
service.  Without a readable key bwcd still runs; secret writes and
decrypting reads then answer st2's "Crypto key not found" 400.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.logger import Logger

from bwcd.datastore.crypto import CryptoError, ensureKeyFile
from bwcd.datastore.keys import KeyService

log = Logger(namespace="bwcd.datastore")


class DatastoreKeyFile(Service):
    def __init__(self, keys: KeyService, path: str) -> None:
        self._keys = keys
        self._path = path

    def startService(self) -> None:
        super().startService()
        try:
            self._keys.cryptoKey = ensureKeyFile(self._path)
        except (OSError, CryptoError) as e:
            log.error("Datastore key {path} unusable ({error}): secret values cannot be stored or read", path=self._path, error=str(e))
        self._keys.keyPath = self._path
