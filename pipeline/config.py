"""Loading and validating an otelcol-shaped YAML config.

Steps: parse YAML → expand `${env:VAR}` / `${env:VAR:-default}` / `$$` in every string →
check the top-level shape → build each *used* component's typed config through its factory →
check that pipelines reference only configured components. Every problem is reported with the
YAML path in otelcol's `a::b::c` form; all problems are collected and reported together.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from spanpipe.configyaml import component_type, safe_load_bounded
from spanpipe.errors import ConfigError
from spanpipe.component import CAPABILITIES, ComponentConfig
from spanpipe.registry import KINDS, Registry
from spanpipe.selftelemetry import TelemetryConfig

TOP_LEVEL = ("receivers", "processors", "exporters", "extensions", "connectors", "service")
SIGNALS = ("traces", "logs")
PIPELINE_KEYS = ("receivers", "processors", "exporters")

_ENV = re.compile(r"\$\$|\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(/[^/\s]+)?$")


@dataclass
class PipelineConfig:
    name: str
    signal: str
    receivers: list[str]
    processors: list[str]
    exporters: list[str]


@dataclass
class Config:
    receivers: dict[str, ComponentConfig] = field(default_factory=dict)
    processors: dict[str, ComponentConfig] = field(default_factory=dict)
    exporters: dict[str, ComponentConfig] = field(default_factory=dict)
    extensions: dict[str, ComponentConfig] = field(default_factory=dict)
    pipelines: dict[str, PipelineConfig] = field(default_factory=dict)
    service_extensions: list[str] = field(default_factory=list)
    telemetry: TelemetryConfig = field(default_factory=lambda: TelemetryConfig())

    @property
    def log_level(self) -> str:
        return self.telemetry.logs.level

    def components(self, kind: str) -> dict[str, ComponentConfig]:
        return getattr(self, kind)


def _expand(value: Any, path: str, env: dict[str, str], errors: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}::{k}" if path else str(k), env, errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}::{i}", env, errors) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        errors.append(f"{path}: environment variable '{name}' is not set and has no default "
                      f"(write ${{env:{name}:-value}} to give one)")
        return ""

    whole = _ENV.fullmatch(value)
    expanded = _ENV.sub(sub, value)
    if whole and whole.group(0) != "$$":
        # As in otelcol, a value that is only a variable takes the YAML type of its content.
        try:
            typed = yaml.safe_load(expanded)
        except yaml.YAMLError:
            return expanded
        return typed if isinstance(typed, (int, float, bool)) else expanded
    return expanded


def _format_pydantic(prefix: str, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if err["type"] == "extra_forbidden":
            where = "::".join([prefix, *loc[:-1]])
            out.append(f"{where}: unknown key '{loc[-1]}'")
            continue
        where = "::".join([prefix, *loc])
        msg = err["msg"].removeprefix("Value error, ")
        if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {err['input']!r})"
        out.append(f"{where}: {msg}")
    return out


def build_component_config(registry: Registry, kind: str, component_id: str, raw: Any,
                           errors: list[str]) -> ComponentConfig | None:
    path = f"{kind}::{component_id}"
    if not _ID.match(component_id):
        errors.append(f"{path}: invalid component id (expected 'type' or 'type/name')")
        return None
    ctype = component_type(component_id)
    factory = registry.get(kind, ctype)
    if factory is None:
        known = ", ".join(sorted(registry.types(kind))) or "none"
        errors.append(f"{path}: unknown {kind[:-1]} type '{ctype}' (known: {known})")
        return None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
        return None
    try:
        cfg = factory.config_class.model_validate(raw)
        cfg.validate_config()
    except ValidationError as exc:
        errors.extend(_format_pydantic(path, exc))
        return None
    except ValueError as exc:
        errors.append(f"{path}: {exc}")
        return None
    return cfg


def _as_list(value: Any, path: str, errors: list[str]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(f"{path}: expected a list of component ids")
        return []
    return value


def parse_config(doc: Any, registry: Registry, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    errors: list[str] = []
    if doc is None:
        raise ConfigError("config is empty")
    if not isinstance(doc, dict):
        raise ConfigError("config: expected a mapping at the top level")
    doc = _expand(doc, "", env, errors)
    for key in doc:
        if key not in TOP_LEVEL:
            errors.append(f"{key}: unknown top-level key (expected one of {', '.join(TOP_LEVEL)})")
    if doc.get("connectors"):
        errors.append("connectors: connectors are not supported")
    sections: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        section = doc.get(kind) or {}
        if not isinstance(section, dict):
            errors.append(f"{kind}: expected a mapping of component ids")
            section = {}
        sections[kind] = section

    cfg = Config()
    service = doc.get("service")
    if not isinstance(service, dict):
        errors.append("service: missing (it must list at least one pipeline under service::pipelines)")
        service = {}
    for key in service:
        if key not in ("pipelines", "extensions", "telemetry"):
            errors.append(f"service: unknown key '{key}'")
    try:
        cfg.telemetry = TelemetryConfig.model_validate(service.get("telemetry") or {})
    except ValidationError as exc:
        errors.extend(_format_pydantic("service::telemetry", exc))
    pipelines = service.get("pipelines")
    if not isinstance(pipelines, dict) or not pipelines:
        errors.append("service::pipelines: at least one pipeline is required")
        pipelines = {}

    used: dict[str, set[str]] = {k: set() for k in KINDS}
    for pname, pdef in pipelines.items():
        ppath = f"service::pipelines::{pname}"
        signal = str(pname).split("/", 1)[0]
        if signal not in SIGNALS:
            errors.append(f"{ppath}: unsupported signal '{signal}' (supported: {', '.join(SIGNALS)})")
            continue
        if not isinstance(pdef, dict):
            errors.append(f"{ppath}: expected a mapping with receivers, processors, exporters")
            continue
        for key in pdef:
            if key not in PIPELINE_KEYS:
                errors.append(f"{ppath}: unknown key '{key}'")
        lists = {k: _as_list(pdef.get(k), f"{ppath}::{k}", errors) for k in PIPELINE_KEYS}
        for k in ("receivers", "exporters"):
            if not lists[k]:
                errors.append(f"{ppath}::{k}: at least one {k[:-1]} is required")
        for k, ids in lists.items():
            for cid in ids:
                if cid not in sections[k]:
                    errors.append(f"{ppath}::{k}: references {k[:-1]} '{cid}' which is not "
                                  f"configured under '{k}'")
                factory = registry.get(k, component_type(str(cid)))
                if factory is not None and signal not in factory.signals:
                    errors.append(f"{ppath}::{k}: {k[:-1]} '{cid}' does not support {signal} "
                                  f"(it takes: {', '.join(factory.signals)})")
                used[k].add(cid)
            if len(set(ids)) != len(ids):
                errors.append(f"{ppath}::{k}: lists the same component twice")
        cfg.pipelines[pname] = PipelineConfig(pname, signal, lists["receivers"],
                                              lists["processors"], lists["exporters"])
    cfg.service_extensions = _as_list(service.get("extensions"), "service::extensions", errors)
    for eid in cfg.service_extensions:
        if eid not in sections["extensions"]:
            errors.append(f"service::extensions: references extension '{eid}' which is not "
                          "configured under 'extensions'")
        used["extensions"].add(eid)

    # Every configured component is type-checked (as otelcol does), but only used ones are built.
    for kind in KINDS:
        for cid, raw in sections[kind].items():
            built = build_component_config(registry, kind, str(cid), raw, errors)
            if built is not None and cid in used[kind]:
                cfg.components(kind)[cid] = built
    for kind in ("receivers", "exporters"):
        for cid, built in cfg.components(kind).items():
            for where, eid in built.extension_refs().items():
                if eid not in cfg.service_extensions:
                    errors.append(f"{kind}::{cid}::{where}: extension '{eid}' must be configured under "
                                  "'extensions' and listed in service::extensions")
                    continue
                capability = where.rsplit("::", 1)[-1]
                factory = registry.get("extensions", component_type(eid))
                if capability in CAPABILITIES and factory is not None and capability not in factory.capabilities:
                    article = "an" if capability[0] in "aeiou" else "a"
                    errors.append(f"{kind}::{cid}::{where}: extension '{eid}' is not {article} {capability} (a "
                                  f"'{factory.type}' extension provides: {', '.join(factory.capabilities) or 'nothing'})")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return cfg


def load_config(path: str | Path, registry: Registry, env: dict[str, str] | None = None) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        doc = safe_load_bounded(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_config(doc, registry, env)
