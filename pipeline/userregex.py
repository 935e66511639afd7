"""Regular expressions written by users (redaction, filter, OTTL IsMatch, attributes, sampling,
span-name rules), compiled by RE2: matching is linear in the text, so an attribute value can never
freeze the collector (Python's `re` backtracks), and the syntax is otelcol's (Go's regexp is RE2).
A pattern RE2 cannot run (backreferences, lookaround) is a config error."""

from __future__ import annotations

import functools
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error is raised to the caller, with the YAML path


class RegexError(ValueError):
    pass


def compile_regex(pattern: str) -> Any:
    """An RE2 pattern object (search / match / fullmatch / sub / groupindex, as `re`'s)."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise RegexError(f"invalid regex '{pattern}' (RE2 syntax, as otelcol's): {reason}") from None


class NameMatcher:
    """`search(name)` of a user regex over low-cardinality text (span names, service names),
    memoised: an RE2 call from Python costs ~3 µs, ten times a dict lookup, and names repeat."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._regex = compile_regex(pattern)
        self.search = functools.lru_cache(maxsize=4096)(self._search)

    def _search(self, text: str) -> bool:
        return self._regex.search(text) is not None
