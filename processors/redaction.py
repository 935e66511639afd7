"""The `redaction` processor: keeps secrets out of the warehouse (otelcol's keys and semantics).

* `allow_all_keys` (false, as otelcol): when false, span attributes not in `allowed_keys` are
  deleted; `ignored_keys` are never touched.
* `blocked_key_patterns`: values of keys matching these regexes are masked whole (`****`).
* `blocked_values`: substrings matching these regexes (API keys, emails) are masked in every
  string value, including strings inside lists and maps and in span events.
* `allowed_values`: values matching these regexes are left alone even if blocked.
* `summary`: `debug` adds `redaction.redacted.keys/count` and `redaction.masked.keys/count`,
  `info` adds only the counts, `silent` adds nothing.
Applied to span attributes and span event attributes, before anything is stored.
"""

from __future__ import annotations

import re
import re._constants as sre_constants
import re._parser as sre_parse
from dataclasses import replace
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spanpipe.arrowcolumn import JsonColumn
from spanpipe.component import BatchTransform, Consumer
from spanpipe.component import ComponentConfig
from spanpipe.registry import Factory
from spanpipe.spanbatch import SpanBatch, with_changes
from spanpipe.telemetry import counters
from spanpipe.userregex import RegexError, compile_regex

MASK = "****"


def required_literal(pattern: str) -> str | None:
    """The longest run of literal characters every match must contain, or None.

    Lets a value be skipped with a fast substring test (`"@" in value`) before the regex scans it:
    most attribute values (prompts, completions) contain no secret, and scanning them is the cost.
    """
    try:
        parsed = sre_parse.parse(pattern)
    except Exception:  # noqa: BLE001 - an unusual pattern: no shortcut, the regex still applies
        return None
    if parsed.state.flags & re.IGNORECASE:
        return None
    best, run = "", ""
    for op, arg in parsed:
        if op == sre_constants.LITERAL:
            run += chr(arg)
            best = max(best, run, key=len)
        else:
            run = ""
    return best or None


# What a JSON text of attributes writes differently from the value (our encoders escape nothing
# else): a match that can include none of these characters is found in the text as in the value.
_ESCAPED = {*range(0x20), ord('"'), ord("\\")}
# Zero-width assertions that see the same at a value's edge as at its quote (unless an escaped
# character is next to the match: then the text holds a letter where the value holds, say, "\n").
_BOUNDARIES = {sre_constants.AT_BOUNDARY, sre_constants.AT_NON_BOUNDARY, sre_constants.AT_LOC_BOUNDARY,
               sre_constants.AT_LOC_NON_BOUNDARY, sre_constants.AT_UNI_BOUNDARY, sre_constants.AT_UNI_NON_BOUNDARY}
_SAFE_CATEGORIES = {sre_constants.CATEGORY_DIGIT, sre_constants.CATEGORY_WORD}


def _atoms(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (opcode, argument) of a parsed pattern, nested ones included."""
    for op, av in node:
        yield op, av
        for item in av if isinstance(av, (list, tuple)) else (av,):
            if isinstance(item, sre_parse.SubPattern):
                yield from _atoms(item)
            elif isinstance(item, (list, tuple)):
                for sub in item:
                    if isinstance(sub, sre_parse.SubPattern):
                        yield from _atoms(sub)


def _escape_safe(op: Any, av: Any) -> bool:
    """Whether this atom can match no character that JSON escapes, and asserts nothing."""
    if op is sre_constants.LITERAL:
        return av not in _ESCAPED
    if op is sre_constants.IN:
        return all(_escape_safe(o, a) for o, a in av)
    if op is sre_constants.RANGE:
        return not any(c in _ESCAPED for c in range(av[0], av[1] + 1))
    if op is sre_constants.CATEGORY:
        return av in _SAFE_CATEGORIES
    return op in (sre_constants.SUBPATTERN, sre_constants.BRANCH, sre_constants.MAX_REPEAT,
                  sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT, sre_constants.ATOMIC_GROUP)


class TextScreen:
    """Which spans redaction could change, found in their attributes' and events' JSON texts, so
    that the other spans are never turned into Python values (that was most of the processor's
    cost). A key or string value is written in the text as it is, except for the characters JSON
    escapes; a blocked pattern that matches neither those nor a text's edge (no ^, $; \\b only
    where no character is escaped) finds in the text every match it has in a key or a value. So a
    span is a suspect, read and redacted as before, if a pattern matches anywhere in its texts
    (RE2 in Arrow, every pattern in one pass), or has an escaped character when some pattern could
    depend on one, or holds a value kept beside its JSON (bytes, NaN)."""

    def __init__(self, patterns: list[str], escape_sensitive: bool) -> None:
        self.pattern = "|".join(f"(?:{p})" for p in patterns)
        self.escape_sensitive = escape_sensitive

    @classmethod
    def of(cls, config: RedactionConfig) -> TextScreen | None:
        if not config.allow_all_keys:
            return None
        patterns = [*config.blocked_key_patterns, *config.blocked_values]
        escape_sensitive = False
        for pattern in patterns:
            try:
                atoms = list(_atoms(sre_parse.parse(pattern)))
            except Exception:  # noqa: BLE001 - RE2-only syntax: Python's parser cannot vouch for it
                return None
            if any(op is sre_constants.AT and av not in _BOUNDARIES for op, av in atoms):
                return None  # anchored to a text's or a line's edge: the JSON text has other edges
            if not all(_escape_safe(op, av) for op, av in atoms):
                escape_sensitive = True
        return cls(patterns, escape_sensitive)

    def suspects(self, batch: SpanBatch) -> list[int] | None:
        """Indices of the spans to redact, or None when the batch's columns are not JSON texts."""
        columns = (batch.attributes, batch.events)
        if not all(isinstance(c, JsonColumn) for c in columns):
            return None
        if not self.pattern:
            return []
        rows: set[int] = set()
        for column in columns:
            texts = column.texts  # type: ignore[attr-defined]
            try:
                found = pc.fill_null(pc.match_substring_regex(texts, self.pattern), True)
            except pa.ArrowInvalid:  # the patterns together exceed what RE2 compiles: read every span
                return None
            rows.update(pc.indices_nonzero(found).to_pylist())
            if self.escape_sensitive:
                rows.update(_rows_with_a_backslash(texts))
            rows.update(column.exact)  # type: ignore[attr-defined]
        return sorted(rows)


def _rows_with_a_backslash(texts: pa.Array | pa.ChunkedArray) -> list[int]:
    rows: list[int] = []
    first = 0
    for chunk in texts.chunks if isinstance(texts, pa.ChunkedArray) else [texts]:
        width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], dtype=width)[chunk.offset:chunk.offset + len(chunk) + 1]
        data = chunk.buffers()[2]
        if data is not None and len(chunk):
            text = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]]
            at = np.flatnonzero(text == ord("\\")) + offsets[0]
            rows.extend((first + np.unique(np.searchsorted(offsets, at, side="right") - 1)).tolist())
        first += len(chunk)
    return rows


class RedactionConfig(ComponentConfig):
    allow_all_keys: bool = False
    allowed_keys: list[str] = []
    ignored_keys: list[str] = []
    blocked_key_patterns: list[str] = []
    blocked_values: list[str] = []
    allowed_values: list[str] = []
    summary: Literal["debug", "info", "silent"] = "info"

    def validate_config(self) -> None:
        for field in ("blocked_key_patterns", "blocked_values", "allowed_values"):
            for i, pattern in enumerate(getattr(self, field)):
                try:
                    compile_regex(pattern)
                except RegexError as exc:
                    raise ValueError(f"{field}::{i}: {exc}") from None


class RedactionProcessor(BatchTransform):
    def __init__(self, component_id: str, config: RedactionConfig, next_consumer: Consumer) -> None:
        super().__init__(component_id, next_consumer)
        self.config = config
        self.allowed = set(config.allowed_keys)
        self.ignored = set(config.ignored_keys)
        self.blocked_keys = [compile_regex(p) for p in config.blocked_key_patterns]
        self.blocked_values = [(compile_regex(p), required_literal(p)) for p in config.blocked_values]
        self.allowed_values = [compile_regex(p) for p in config.allowed_values]
        self._key_action: dict[str, str] = {}
        self.screen = TextScreen.of(config)

    def _mask(self, value: Any) -> tuple[Any, bool]:
        if isinstance(value, str):
            masked = value
            for rx, literal in self.blocked_values:
                if (literal is None or literal in masked) and rx.search(masked):
                    if any(a.fullmatch(value) for a in self.allowed_values):
                        return value, False
                    masked = rx.sub(MASK, masked)
            return masked, masked is not value
        if isinstance(value, list):
            pairs = [self._mask(v) for v in value]
            return [p[0] for p in pairs], any(p[1] for p in pairs)
        if isinstance(value, dict):
            pairs = {k: self._mask(v) for k, v in value.items()}
            return {k: p[0] for k, p in pairs.items()}, any(p[1] for p in pairs.values())
        return value, False

    def _decide_key(self, key: str) -> str:
        if key in self.ignored:
            action = "keep"
        elif not self.config.allow_all_keys and key not in self.allowed:
            action = "redact"
        elif any(p.search(key) for p in self.blocked_keys):
            action = "mask"
        else:
            action = "scan"
        if len(self._key_action) < 100_000:
            self._key_action[key] = action
        return action

    def redact(self, attrs: dict[str, Any], summary: bool = True) -> tuple[dict[str, Any], int, int]:
        out: dict[str, Any] = {}
        redacted: list[str] = []
        masked: list[str] = []
        for k, v in attrs.items():
            action = self._key_action.get(k) or self._decide_key(k)
            if action == "keep":
                out[k] = v
                continue
            if action == "redact":
                redacted.append(k)
                continue
            if action == "mask":
                out[k] = MASK
                masked.append(k)
                continue
            new, changed = self._mask(v)
            out[k] = new
            if changed:
                masked.append(k)
        if summary and self.config.summary != "silent" and (redacted or masked):
            if self.config.summary == "debug":
                if redacted:
                    out["redaction.redacted.keys"] = ",".join(sorted(redacted))
                if masked:
                    out["redaction.masked.keys"] = ",".join(sorted(masked))
            if redacted:
                out["redaction.redacted.count"] = len(redacted)
            if masked:
                out["redaction.masked.count"] = len(masked)
        return out, len(redacted), len(masked)

    def process(self, batch: SpanBatch) -> SpanBatch:
        """Spans nothing is redacted from keep their attributes and events as they came (from a
        decode worker: the JSON that is stored as it is); only the changed ones are replaced."""
        attrs_changes: dict[int, dict[str, Any]] = {}
        events_changes: dict[int, list[dict[str, Any]]] = {}
        total_redacted = total_masked = 0
        suspects = self.screen.suspects(batch) if self.screen is not None else None
        if suspects is None:
            rows: Any = enumerate(zip(batch.attributes, batch.events))
        else:
            # The screen ran, so both columns are JSON texts: each suspect is read alone.
            texts: Any = (batch.attributes, batch.events)
            rows = ((i, (texts[0].value_at(i), texts[1].value_at(i))) for i in suspects)
        for i, (attrs, events) in rows:
            new, r, m = self.redact(attrs)
            if r or m:
                attrs_changes[i] = new
                total_redacted += r
                total_masked += m
            if events:
                redacted = [self.redact(e["attributes"], summary=False) for e in events]
                if any(r or m for _, r, m in redacted):
                    events_changes[i] = [{**e, "attributes": a} for e, (a, _, _) in zip(events, redacted)]
        if total_redacted or total_masked:
            counters.add("processor_redaction_redacted", total_redacted, processor=self.id)
            counters.add("processor_redaction_masked", total_masked, processor=self.id)
        if not attrs_changes and not events_changes:
            return batch
        return replace(batch, attributes=with_changes(batch.attributes, attrs_changes),  # type: ignore[arg-type]
                       events=with_changes(batch.events, events_changes))  # type: ignore[arg-type]


factory = Factory("redaction", "processors", RedactionConfig,
                  lambda cid, cfg, nxt: RedactionProcessor(cid, cfg, nxt))
