"""Secrets from SSM Parameter Store (SecureString), read once per container and cached a while."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

CACHE_SECONDS: Final = 300.0


@dataclass
class ParameterSecret:
    """The decrypted value of an SSM parameter, re-read after `ttl_s` so a rotation applies."""

    client: Any
    name: str
    ttl_s: float = CACHE_SECONDS
    clock: Callable[[], float] = time.monotonic
    _value: str | None = field(default=None, init=False)
    _read_at: float = field(default=0.0, init=False)

    def get(self) -> str:
        now = self.clock()
        if self._value is None or now - self._read_at > self.ttl_s:
            answer = self.client.get_parameter(Name=self.name, WithDecryption=True)
            value = answer["Parameter"]["Value"]
            if not value:
                raise ValueError(f"SSM parameter {self.name} is empty")
            self._value, self._read_at = value, now
        return self._value
