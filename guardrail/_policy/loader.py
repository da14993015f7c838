"""Policy files: YAML -> position tree -> validated :class:`~guardrail._policy.schema.Policy`.

Every error carries ``file:line:column`` (1-based) and the dotted key path, one line each::

    support.yaml:7:10  thresholds.benevolence.min  Input should be a valid number, ... (got 'high')
    support.yaml:9:3  thresholds.kindness  unknown value dimension 'kindness'; expected one of: ...
    support.yaml:12:5  actions.soften.tone  unknown key 'tone'; allowed: type, message, strategy, ...

``extends`` chains are merged with :func:`guardrail._policy.schema.merge` before one validation, and an
error in an inherited key points into the parent file that defined it.

Files are read defensively (:func:`read_yaml`, also used for policy-set files): safe YAML only (no
tag constructs an object), at most ``MAX_FILE_BYTES``, at most ``MAX_NODES`` nodes with aliases
expanded (so a small file cannot expand into millions of nodes, and pure-Python parsing stays well
under a second), collections nested at most ``MAX_DEPTH`` deep. Merge keys (``<<: *base``) and the
odd shared value stay far below these.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from guardrail._exceptions import (
    Issue,
    PolicyError,
    PolicyNotFoundError,
    PolicySyntaxError,
    PolicyValidationError,
)
from guardrail._policy.schema import Policy, merge
from guardrail._resources import TEST_SUFFIX, policies_dir, policy_names

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_NODES", "dotted", "issue_message", "load_policy", "policy_files",
           "policy_schema", "read_yaml", "validate_files"]  # fmt: skip

MAX_FILE_BYTES = 1 << 20
"""Largest policy or policy-set file read (1 MiB): a policy is a few kilobytes."""
MAX_DEPTH = 64
"""Deepest nesting of YAML collections, aliases expanded: a policy nests five levels."""
MAX_NODES = 20_000
"""Most YAML nodes (keys, values, items) in a document, aliases expanded: a policy has a few hundred."""

KeyPath = tuple[str | int, ...]
"""A key path inside a YAML document, in pydantic's ``loc`` form: ``("thresholds", "power", "min")``."""

_Pos = tuple[int, int]
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MISSING = object()


@dataclass
class _Doc:
    """One parsed policy file and where each of its keys sits."""

    file: str  # as shown to the user
    path: Path  # resolved, for cycle detection and relative ``extends``
    data: Any
    spots: dict[KeyPath, _Pos] = field(default_factory=dict)  # key for collections, else value
    keys: dict[KeyPath, _Pos] = field(default_factory=dict)  # the key itself
    values: dict[KeyPath, _Pos] = field(default_factory=dict)  # the value itself


class _Found(NamedTuple):
    path: Path | None  # None when it does not exist
    shown: str  # the name shown to the user
    is_path: bool  # a file path rather than a shipped name


class _PositionLoader(yaml.SafeLoader):
    """A SafeLoader that also records where every node of the document starts, and bounds its cost."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open_anchors: list[str | None] = []  # anchors of the collections being composed
        self._first_alias: yaml.Mark | None = None
        self._nodes = 0

    def load_document(self, doc: _Doc) -> None:
        """Compose and construct the single document, filling ``doc.data`` and its positions."""
        node = self.get_single_node()
        if node is None:
            return
        if self._first_alias is not None:
            _check_expansion(node, self._first_alias)
        self._check_duplicates(node, doc.file)
        doc.data = self.construct_document(node)
        self._record(node, (), None, doc)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Compose one node, refusing recursive aliases and nesting deeper than ``MAX_DEPTH``."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise yaml.composer.ComposerError(
                    None, None, f"recursive alias *{event.anchor}: it is used inside its own anchor", event.start_mark
                )
            self._first_alias = self._first_alias or event.start_mark
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        self._nodes += 1
        if self._nodes > MAX_NODES:  # checked while composing: parsing stops here, not at the end
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_NODES:,} YAML nodes; a policy has a few hundred", event.start_mark
            )
        if len(self._open_anchors) >= MAX_DEPTH:
            # PyYAML composes recursively: a deep file would otherwise end in a RecursionError.
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._open_anchors.append(getattr(event, "anchor", None))
        try:
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            self._open_anchors.pop()

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """Construct one node; a scalar Python cannot hold (a 5,000-digit int, month 13) is a marked error."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {exc}", node.start_mark
            ) from exc

    def _check_duplicates(self, node: yaml.Node, file: str) -> None:
        # SafeLoader silently keeps the last of two equal keys; in a policy that drops a rule.
        if isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                    if (key.tag, key.value) in seen:
                        line, column = _pos(key.start_mark)
                        raise PolicySyntaxError(file, line, column, f"duplicate key {key.value!r}")
                    seen.add((key.tag, key.value))
        for child in _children(node):
            self._check_duplicates(child, file)

    def _record(self, node: yaml.Node, path: KeyPath, key: _Pos | None, doc: _Doc) -> None:
        # Walked after construction, so `<<` merges are already flattened into node.value.
        key = key or _pos(node.start_mark)
        collection = isinstance(node, (yaml.MappingNode, yaml.SequenceNode))
        doc.keys[path], doc.values[path] = key, _pos(node.start_mark)
        doc.spots[path] = key if collection else doc.values[path]
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    name = self.construct_object(key_node)
                    self._record(value_node, (*path, name), _pos(key_node.start_mark), doc)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._record(item, (*path, index), None, doc)


def _check_expansion(root: yaml.Node, first_alias: yaml.Mark) -> None:
    """Refuse a document whose aliases expand it past ``MAX_NODES`` nodes or ``MAX_DEPTH`` levels.

    Counted over the composed graph, where an alias is a shared node, without expanding anything:
    each node is visited once (iteratively: the graph can be deeper than Python's stack).
    """
    size: dict[int, int] = {}  # expanded node count below and including each node
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            children = _children(node)
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            depth[id(node)] = 1 + max((depth[id(c)] for c in children), default=0)
        elif id(node) not in size:
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node) if id(c) not in size)
    if size[id(root)] > MAX_NODES:
        message = f"aliases expand this document to {size[id(root)]:,} YAML nodes; at most {MAX_NODES:,} are read"
        raise yaml.composer.ComposerError(None, None, message, first_alias)
    if depth[id(root)] > MAX_DEPTH:
        message = f"nested more than {MAX_DEPTH} levels deep once aliases are expanded"
        raise yaml.composer.ComposerError(None, None, message, first_alias)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _pos(mark: yaml.Mark) -> _Pos:
    return mark.line + 1, mark.column + 1


def load_policy(source: str | os.PathLike[str] | Policy) -> Policy:
    """Load, merge (``extends``) and validate a policy.

    Args:
        source: A :class:`Policy` (returned as is), a path to a YAML file (anything with a path
            separator, ending in ``.yaml``/``.yml``, or naming an existing file), or the name of a
            shipped policy such as ``"default"``.

    Returns:
        The validated policy, with every ``extends`` parent merged in.

    Raises:
        PolicyNotFoundError: The policy, or a parent named by ``extends``, does not exist.
        PolicySyntaxError: A file is not valid YAML.
        PolicyValidationError: The merged policy breaks the schema; ``issues`` lists every problem.

    Example:
        >>> policy = load_policy("policies/support.yaml")  # doctest: +SKIP
        >>> policy.thresholds["benevolence"].min  # doctest: +SKIP
        -0.3
    """
    if isinstance(source, Policy):
        return source
    name = os.fspath(source)
    found = _find(name, Path.cwd(), "", is_path=not isinstance(source, str))
    if found.path is None:
        raise PolicyNotFoundError(_not_found(name, found))
    chain = _read_chain(found.path, found.shown)
    merged: Any = chain[-1].data
    for doc in reversed(chain[:-1]):
        merged = merge(merged, doc.data)
    if isinstance(candidate := chain[0].data.get("shadow"), str):
        merged = {**merged, "shadow": _shadow_source(chain[0], candidate)}
    try:
        return Policy.model_validate(merged)
    except ValidationError as exc:
        issues = {_issue(chain, merged, err): None for err in exc.errors()}  # ordered, without repeats
        files = {doc.file: n for n, doc in enumerate(chain)}
        ordered = sorted(issues, key=lambda i: (files.get(i.file, 0), i.line or 0, i.column or 0))
        raise PolicyValidationError(ordered) from exc


def policy_schema() -> dict[str, Any]:
    """Return the JSON Schema of a policy file, for editors and ``guardrail policy schema``."""
    schema = Policy.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "value-guardrail policy",
    }


def validate_files(
    paths: Iterable[str | os.PathLike[str]],
) -> list[tuple[str, PolicyError | None]]:
    """Load each policy and collect its error, for ``guardrail policy validate FILE...``.

    Args:
        paths: Policy files (or shipped names), checked independently.

    Returns:
        ``(path, error)`` pairs in input order; ``error`` is ``None`` for a valid policy.
    """
    results: list[tuple[str, PolicyError | None]] = []
    for path in paths:
        try:
            load_policy(path)
        except PolicyError as exc:
            results.append((os.fspath(path), exc))
        else:
            results.append((os.fspath(path), None))
    return results


def _find(source: str, base: Path, shown_base: str, *, is_path: bool = False) -> _Found:
    """Resolve a path (against ``base``) or a shipped name to the file, if it exists."""
    is_path = (
        is_path
        or os.sep in source
        or (os.altsep is not None and os.altsep in source)
        or source.endswith((".yaml", ".yml"))
        or (base / source).is_file()
    )
    if is_path:
        shown = source if os.path.isabs(source) else os.path.normpath(os.path.join(shown_base, source))
        path = base / source
        return _Found(path if path.is_file() else None, shown, True)
    try:
        shipped = policies_dir() / f"{source}.yaml"
    except FileNotFoundError:
        return _Found(None, source, False)
    # A shipped policy's test file lies beside it, but is no policy to load by name.
    exists = shipped.is_file() and not source.endswith(TEST_SUFFIX)
    return _Found(shipped if exists else None, str(shipped), False)


def policy_files(source: str | os.PathLike[str]) -> list[Path]:
    """The files a policy is read from: the file itself, then each ``extends`` parent (what a reload watches).

    Raises:
        PolicyError: As :func:`load_policy`.
    """
    name = os.fspath(source)
    found = _find(name, Path.cwd(), "", is_path=not isinstance(source, str))
    if found.path is None:
        raise PolicyNotFoundError(_not_found(name, found))
    return [doc.path.resolve() for doc in _read_chain(found.path, found.shown)]


def _shadow_source(doc: _Doc, candidate: str) -> str:
    """A shadow candidate as the guard loads it: a shipped name, or a path resolved against the naming file."""
    found = _find(candidate, doc.path.parent, os.path.dirname(doc.file))
    if found.path is None:
        line, column = doc.spots.get(("shadow",), (None, None))
        raise PolicyNotFoundError(str(Issue(doc.file, line, column, "shadow", _not_found(candidate, found))))
    return str(found.path.resolve()) if found.is_path else candidate


def _not_found(source: str, found: _Found) -> str:
    try:
        names = policy_names(policies_dir())
    except FileNotFoundError:
        names = []
    what = f"policy file {found.shown!r}" if found.is_path else f"policy {source!r}"
    return f"{what} not found; shipped policies: {', '.join(names) or 'none'}"


def read_yaml(path: Path, file: str, what: str = "policy file") -> _Doc:
    """Read one YAML file safely (see the module docs): its data and the position of every key.

    Args:
        path: The file.
        file: Its name as shown to the user in errors.
        what: What the file is, for the "cannot read" message.

    Raises:
        PolicyNotFoundError: The file cannot be read.
        PolicySyntaxError: It is too large, not UTF-8, not YAML, or its aliases or nesting go too far.
    """
    doc = _Doc(file=file, path=path.resolve(), data=None)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)  # read, not stat: a pipe or /dev/zero has no size
    except OSError as exc:
        raise PolicyNotFoundError(f"cannot read {what} {file!r}: {exc.strerror}") from exc
    if len(raw) > MAX_FILE_BYTES:
        message = f"the file is larger than {MAX_FILE_BYTES:,} bytes; a policy is a few kilobytes"
        raise PolicySyntaxError(file, None, None, message)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicySyntaxError(file, None, None, f"not UTF-8 text ({exc.reason})") from exc
    try:
        loader = _PositionLoader(text)
        try:
            loader.load_document(doc)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = _pos(mark) if mark is not None else (None, None)
        message = exc.problem or "invalid YAML"
        if exc.context:
            message = f"{exc.context}: {message}"
        raise PolicySyntaxError(file, line, column, message) from exc
    except yaml.reader.ReaderError as exc:
        # Raised before any token exists, so it has an offset instead of a mark.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        message = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise PolicySyntaxError(file, line, column, message) from exc
    except yaml.YAMLError as exc:
        raise PolicySyntaxError(file, None, None, f"invalid YAML: {exc}") from exc
    return doc


def _read(path: Path, file: str) -> _Doc:
    doc = read_yaml(path, file)
    if not isinstance(doc.data, Mapping):
        got = "an empty file" if doc.data is None else f"a {type(doc.data).__name__}"
        line, column = doc.spots.get((), (None, None))
        message = f"the top level must be a mapping of policy keys, got {got}"
        raise PolicyValidationError([Issue(file, line, column, "", message)])
    return doc


def _read_chain(path: Path, file: str) -> list[_Doc]:
    """Read a policy and its ``extends`` ancestors, child first."""
    chain = [_read(path, file)]
    while isinstance(parent := chain[-1].data.get("extends"), str):
        doc = chain[-1]
        line, column = doc.spots.get(("extends",), (None, None))
        found = _find(parent, doc.path.parent, os.path.dirname(doc.file))
        if found.path is None:
            where = Issue(doc.file, line, column, "extends", _not_found(parent, found))
            raise PolicyNotFoundError(str(where))
        seen = [d.path for d in chain]
        if found.path.resolve() in seen:
            start = seen.index(found.path.resolve())
            loop = " -> ".join([d.file for d in chain[start:]] + [chain[start].file])
            first = chain[start]
            line, column = first.spots.get(("extends",), (None, None))
            raise PolicyValidationError([Issue(first.file, line, column, "extends", f"cyclic extends: {loop}")])
        chain.append(_read(found.path, found.shown))
    return chain


def _issue(chain: list[_Doc], merged: Any, err: ErrorDetails) -> Issue:
    kind, loc = err["type"], tuple(err["loc"])
    # Which part of `key: value` to show: the key of a key that should not be there, the value
    # of a wrong value, and the key naming the entry that a validator rejected as a whole.
    show = "entry" if kind == "value_error" else "value"
    if kind == "extra_forbidden" or "[key]" in loc:
        show = "key"
    loc = tuple(seg for seg in loc if seg != "[key]")
    message = issue_message(err, loc)
    doc, spot = chain[0], ()  # the child's top level when nothing nearer is located
    for size in range(len(loc), 0, -1):
        if _get(merged, loc[:size], _MISSING) is _MISSING:
            show = "entry"  # a missing key: report it at the entry that lacks it
            continue
        # The most derived file that has a key is the one whose value survived the merge.
        owner = next((d for d in chain if loc[:size] in d.spots), None)
        if owner is not None:
            doc, spot = owner, loc[:size]
            break
    spots = {"key": doc.keys, "value": doc.values, "entry": doc.spots}[show]
    line, column = spots[spot]
    return Issue(doc.file, line, column, dotted(loc), message)


def issue_message(err: ErrorDetails, loc: KeyPath, root: type[BaseModel] = Policy) -> str:
    """The one-line message of a pydantic error at ``loc`` (``[key]`` segments removed) of a ``root`` document.

    Shared by every YAML file the package validates (policies, policy tests), so they read alike.
    """
    kind, message, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1], root)
        allowed = ", ".join(model.model_fields) if model is not None else "none"
        return f"unknown key {loc[-1]!r}; allowed: {allowed}"
    if kind == "missing":
        return f"missing required key {loc[-1]!r}"
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return f"{message} (got {value!r})"
    return message


def _model_at(loc: KeyPath, root: type[BaseModel] = Policy) -> type[BaseModel] | None:
    """Return the model class that validates the mapping at ``loc`` of a ``root`` document, if any."""
    tp: Any = root
    for seg in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(seg))
            tp = None if info is None else info.annotation
        else:  # dict[str, Model] or list[Model]: the segment names an entry or an item
            tp = get_args(tp)[-1] if get_origin(tp) in (dict, list, tuple) and get_args(tp) else None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` (the only unions the policy models use)."""
    while get_origin(tp) in (Annotated, Union, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    return tp


def _get(data: Any, loc: KeyPath, default: Any = None) -> Any:
    for seg in loc:
        in_list = isinstance(data, list) and isinstance(seg, int) and 0 <= seg < len(data)
        if in_list or (isinstance(data, Mapping) and seg in data):
            data = data[seg]
        else:
            return default
    return data


def dotted(loc: KeyPath) -> str:
    """A key path as the errors print it: ``thresholds.benevolence.min``, ``cases.2.expect``."""
    return ".".join(str(seg) for seg in loc)
