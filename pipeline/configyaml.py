"""A config file's YAML, read with bounds, and component ids: what `spanpipe run` needs before
pyarrow and the component model load (spanpipe.config builds on it)."""

from __future__ import annotations

from typing import Any

import yaml

from spanpipe.errors import ConfigError


def component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


MAX_YAML_NODES = 100_000  # after aliases are expanded: a config is a few hundred
MAX_YAML_DEPTH = 64


def safe_load_bounded(text: str) -> Any:
    """yaml.safe_load, refusing alias bombs (nodes counted as if aliases were copied) and deep
    nesting with a clear error instead of exhausting memory or the stack."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise ConfigError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep") from None
    if root is None:
        return None
    seen = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            raise ConfigError(f"YAML expands to more than {MAX_YAML_NODES} values (aliases repeated too often)")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend((part, depth + 1) for pair in node.value for part in pair)
    return _construct(root)


def _construct(root: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root)
    finally:
        loader.dispose()
