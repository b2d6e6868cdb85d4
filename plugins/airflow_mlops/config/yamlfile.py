"""Safe YAML loading that keeps the line of every key, so a config error can say `file:line: key: message`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Loc = tuple[str | int, ...]
"""A key path: mapping keys as text, list positions as integers (pydantic's error locations)."""

MAX_BYTES = 1_000_000
MAX_NODES = 100_000
"""Values in the document once aliases are expanded: a few anchors must not make a billion values."""

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml parses ~10x faster


class YamlError(ValueError):
    """The text is not a YAML document this project reads; `line` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _UniqueKeyLoader(_BaseLoader):  # type: ignore[misc]
    """Safe loader that refuses a key repeated in one mapping (YAML would keep only the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if isinstance(key, bool):
            # YAML 1.1 reads unquoted on/off/yes/no as booleans: say so instead of a puzzling type error.
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key_node.value!r} is read as the boolean {key}; quote it", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class YamlDocument:
    """A loaded document and the 1-based line of each key path in it."""

    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of the longest prefix of `loc` found in the document (the key itself when it is there;
        the mapping it is missing from when it is missing; line 1 for a top-level key)."""
        parts = tuple(p if isinstance(p, int) else str(p) for p in loc)
        for end in range(len(parts), 0, -1):
            line = self.lines.get(parts[:end])
            if line is not None:
                return line
        return self.lines.get((), None)


def _key_lines(root: yaml.Node) -> dict[Loc, int]:
    lines: dict[Loc, int] = {(): root.start_mark.line + 1}
    visited = 0
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            raise YamlError(f"more than {MAX_NODES} values once aliases are expanded")
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (*loc, str(key_node.value)) if isinstance(key_node, yaml.ScalarNode) else loc
                lines.setdefault(key, key_node.start_mark.line + 1)
                stack.append((value_node, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault((*loc, i), item.start_mark.line + 1)
                stack.append((item, (*loc, i)))
    return lines


def load_yaml(text: str) -> YamlDocument:
    """Parse one YAML document with the safe loader (no tags that build objects), keeping key lines."""
    if len(text) > MAX_BYTES:
        raise YamlError(f"file larger than {MAX_BYTES} characters")
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(None)
        lines = _key_lines(node)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise YamlError(f"not valid YAML: {problem}", mark.line + 1 if mark else None) from exc
    except yaml.YAMLError as exc:
        raise YamlError(f"not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return YamlDocument(data, lines)
