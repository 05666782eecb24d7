"""Cheap checks a `response_format` JSON schema passes before anything compiles it.

`schema_text` bounds its size and nesting and gives the text that is both the cache key and what the compiler
reads. `check_schema_refs` rejects what xgrammar would turn into a grammar nobody can finish: a `$ref` that
does not resolve or leaves the document (xgrammar lets any JSON value through there), and schemas with no
finite instance (`{"$ref": "#"}`, `$defs` that only point at each other, a required property that recurses).
For those xgrammar builds rules that derive no complete value, and the sampler ends up with no allowed token
at all: the request used to return 200 and one token repeated.
"""

from __future__ import annotations

import json
from collections import deque
from urllib.parse import unquote

from backends.errors import InvalidRequest

PARAM = "response_format"


def schema_text(schema, max_bytes: int, max_depth: int) -> str:
    """The schema as compact JSON, or InvalidRequest when it is too big or too deeply nested. Key order is
    kept: xgrammar writes an object's properties in the schema's order, so reordered schemas differ."""
    try:
        text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    except RecursionError:
        raise InvalidRequest(f"the JSON schema nests deeper than {max_depth} levels "
                             "(grammar_max_schema_depth)", param=PARAM) from None
    size = len(text.encode())
    if size > max_bytes:
        raise InvalidRequest(f"the JSON schema is {size} bytes; this server compiles schemas of at most "
                             f"{max_bytes} bytes (grammar_max_schema_bytes)", param=PARAM)
    depth = _nesting_depth(schema, max_depth)
    if depth > max_depth:
        raise InvalidRequest(f"the JSON schema nests deeper than {max_depth} levels "
                             "(grammar_max_schema_depth)", param=PARAM)
    return text


def _nesting_depth(document, limit: int) -> int:
    """Depth of nested objects and arrays ({} is 1), counted without recursion; stops once past `limit`."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


# Where subschemas sit in a schema, as xgrammar reads it (it ignores `not`, `if`/`then`/`else`, `contains`).
_ONE = ("additionalProperties", "unevaluatedProperties", "items", "additionalItems", "unevaluatedItems")
_MANY = ("prefixItems", "allOf", "anyOf", "oneOf")
_NAMED = ("properties", "patternProperties")
_OBJECT_WORDS = ("properties", "required", "additionalProperties", "patternProperties", "minProperties")
_ARRAY_WORDS = ("items", "prefixItems", "minItems")


def check_schema_refs(schema) -> None:
    """InvalidRequest for a `$ref` that does not resolve inside the document, and for any part of the schema
    a value can enter but never finish (see the module docstring)."""
    graph = _RequirementGraph(schema)
    finishable = graph.finishable()
    # `false` is "nothing may be here", which xgrammar honours; a bare `$ref` is named by its target instead
    stuck = [p for p in graph.order if p not in finishable and graph.nodes[p] is not False]
    if not stuck:
        return
    pointer = next((p for p in stuck if not _is_ref(graph.nodes[p])), stuck[0])
    where = "the schema's root" if pointer == "#" else f"`{pointer}`"
    if graph.recurses(pointer, finishable):
        raise InvalidRequest(f"the JSON schema has no finite instance: {where} can only be completed by nesting "
                             "it inside itself forever (its `$ref` recursion has no base case)", param=PARAM)
    raise InvalidRequest(f"the JSON schema has no instance: {where} requires a value the schema forbids",
                         param=PARAM)


class _RequirementGraph:
    """Each reachable subschema (by JSON pointer) and what a finite value of it needs: an AND over parts,
    where a part is a subschema or an OR of alternatives. A subschema's gate is named by its pointer; the ORs and
    ANDs inside it by (pointer, keyword) pairs, which no pointer can spell."""

    def __init__(self, schema):
        self.document = schema
        self.nodes: dict[str, object] = {}  # pointer -> subschema, in the order found (root first)
        self.gates: dict[str | tuple, tuple[str, list]] = {}  # gate -> ("and" | "or", inputs)
        pending = deque([("#", schema)])
        while pending:
            pointer, node = pending.popleft()
            if pointer in self.nodes:
                continue
            self.nodes[pointer] = node
            for child_pointer, child in self._define(pointer, node):
                if child_pointer not in self.nodes:
                    pending.append((child_pointer, child))
        self.order = list(self.nodes)

    def _define(self, pointer: str, node) -> list[tuple[str, object]]:
        """Add the gate of the subschema at `pointer`; return the subschemas it leads to."""
        if not isinstance(node, dict):
            self.gates[pointer] = ("or", []) if node is False else ("and", [])
            return []
        if "$ref" in node:  # xgrammar follows the reference and ignores its siblings
            target_pointer, target = self._resolve(node["$ref"], pointer)
            self.gates[pointer] = ("and", [target_pointer])
            return [(target_pointer, target)]
        children = self._children(pointer, node)
        if "enum" in node or "const" in node:
            self.gates[pointer] = ("and", [])
            return children
        parts = [f"{pointer}/allOf/{i}" for i in range(len(_list(node.get("allOf"))))]
        for word in ("anyOf", "oneOf"):
            if word in node:
                parts.append(self._gate((pointer, word), "or",
                                        [f"{pointer}/{word}/{i}" for i in range(len(_list(node[word])))]))
        types = node.get("type")
        if types is None:
            types = (["object"] if any(w in node for w in _OBJECT_WORDS) else
                     ["array"] if any(w in node for w in _ARRAY_WORDS) else [])
        types = types if isinstance(types, list) else [types]
        if types:
            parts.append(self._gate((pointer, "type"), "or",
                                    [self._type_gate(pointer, node, t) for t in types]))
        self.gates[pointer] = ("and", parts)
        return children

    def _type_gate(self, pointer: str, node: dict, kind) -> tuple:
        """What a value of one of the node's types needs: its required properties, or its first minItems items."""
        needs = []
        if kind == "object":
            properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
            # xgrammar ignores required names that `properties` lacks
            needs = [f"{pointer}/properties/{_escape(name)}" for name in _list(node.get("required"))
                     if isinstance(name, str) and name in properties]
        elif kind == "array":
            min_items = node.get("minItems", 0) if isinstance(node.get("minItems", 0), int) else 0
            prefix = _list(node.get("prefixItems"))
            needs = [f"{pointer}/prefixItems/{i}" for i in range(min(min_items, len(prefix)))]
            if min_items > len(prefix) and isinstance(node.get("items"), dict | bool):
                needs.append(f"{pointer}/items")
        return self._gate((pointer, "type", kind), "and", needs)

    def _gate(self, name: tuple, kind: str, inputs: list) -> tuple:
        self.gates[name] = (kind, inputs)
        return name

    def _children(self, pointer: str, node: dict) -> list[tuple[str, object]]:
        found = [(f"{pointer}/{w}", node[w]) for w in _ONE if isinstance(node.get(w), dict | bool)]
        found += [(f"{pointer}/{w}/{i}", s) for w in _MANY for i, s in enumerate(_list(node.get(w)))]
        if isinstance(node.get("items"), list):  # the old drafts' tuple form
            found += [(f"{pointer}/items/{i}", s) for i, s in enumerate(node["items"])]
        for word in _NAMED:
            if isinstance(node.get(word), dict):
                found += [(f"{pointer}/{word}/{_escape(k)}", s) for k, s in node[word].items()]
        return found

    def _resolve(self, ref, where: str) -> tuple[str, object]:
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise InvalidRequest(f"the JSON schema's `$ref` {ref!r} at `{where}` points outside the document; "
                                 "only local references ('#' or '#/...') are supported", param=PARAM)
        target, pointer = self.document, "#"
        for raw in ref[2:].split("/") if ref != "#" else []:
            key = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and key in target:
                target = target[key]
            elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
                target = target[int(key)]
            else:
                raise InvalidRequest(f"the JSON schema's `$ref` {ref!r} at `{where}` does not resolve: "
                                     f"`{pointer}` has no {key!r}", param=PARAM)
            pointer += "/" + _escape(key)
        return pointer, target

    def finishable(self) -> set:
        """Gates with a finite value: the least fixed point, by counting each gate's unmet inputs (linear)."""
        unmet, users = {}, {}
        for gate, (kind, inputs) in self.gates.items():
            unmet[gate] = len(inputs) if kind == "and" else min(1, len(inputs)) or -1  # -1: an empty OR, never
            for name in inputs:
                users.setdefault(name, []).append(gate)
        done = {gate for gate, count in unmet.items() if count == 0}
        ready = deque(done)
        while ready:
            for user in users.get(ready.popleft(), ()):
                if user in done:
                    continue
                unmet[user] = unmet[user] - 1 if self.gates[user][0] == "and" else 0
                if unmet[user] == 0:
                    done.add(user)
                    ready.append(user)
        return done

    def recurses(self, start: str, finishable: set) -> bool:
        """Whether the unfinishable gates under `start` loop back on themselves (else something is forbidden)."""
        on_path, seen, stack = set(), set(), [(start, iter(self.gates[start][1]))]
        on_path.add(start)
        while stack:
            gate, inputs = stack[-1]
            step = next((name for name in inputs if name not in finishable), None)
            if step is None:
                stack.pop()
                on_path.discard(gate)
                seen.add(gate)
            elif step in on_path:
                return True
            elif step not in seen:
                on_path.add(step)
                stack.append((step, iter(self.gates[step][1])))
        return False


def _is_ref(node) -> bool:
    return isinstance(node, dict) and "$ref" in node


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
