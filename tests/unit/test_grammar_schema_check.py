"""The checks a schema passes before it is compiled: size, nesting, `$ref`s, a finite instance."""

import pytest

from backends.errors import InvalidRequest
from backends.hf.schema_check import check_schema_refs, schema_text

TREE = {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#"}}}}

NO_FINITE_INSTANCE = {
    "itself": {"$ref": "#"},
    "mutual $defs": {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
    "required self": {"type": "object", "properties": {"self": {"$ref": "#"}}, "required": ["self"]},
    "non-empty array of itself": {"type": "array", "items": {"$ref": "#"}, "minItems": 1},
    "optional property into a loop": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/node"}},
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}, "required": ["next"]}}},
}

FINITE = {
    "tree": TREE,
    "linked list": {"$defs": {"node": {"type": "object", "properties": {
        "value": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
        "required": ["value", "next"]}}, "$ref": "#/$defs/node"},
    "nullable recursion": {"type": ["object", "null"], "properties": {"a": {"$ref": "#"}}, "required": ["a"]},
    "escaped pointer": {"$ref": "#/definitions/a~1b", "definitions": {"a/b": {"type": "null"}}},
    "additionalProperties false": {"type": "object", "additionalProperties": False,
                                   "properties": {"a": {"type": "string"}}},
}


@pytest.mark.parametrize("name", NO_FINITE_INSTANCE)
def test_recursion_without_a_base_case_is_rejected_and_says_why(name):
    with pytest.raises(InvalidRequest) as caught:
        check_schema_refs(NO_FINITE_INSTANCE[name])
    assert "no finite instance" in caught.value.message
    assert "recursion has no base case" in caught.value.message
    assert caught.value.param == "response_format"


def test_the_report_names_the_subschema_that_cannot_finish():
    with pytest.raises(InvalidRequest, match="`#/\\$defs/node`"):
        check_schema_refs(NO_FINITE_INSTANCE["optional property into a loop"])


@pytest.mark.parametrize("name", FINITE)
def test_schemas_with_a_finite_instance_pass(name):
    check_schema_refs(FINITE[name])


def test_a_required_property_the_schema_forbids_is_not_called_recursion():
    with pytest.raises(InvalidRequest, match="requires a value the schema forbids"):
        check_schema_refs({"type": "object", "properties": {"a": False}, "required": ["a"]})


@pytest.mark.parametrize("ref, complaint", [
    ("#/$defs/missing", "does not resolve"),
    ("#/properties/a/items", "does not resolve"),
    ("http://example.com/schema.json", "points outside the document"),
    ("other.json#/a", "points outside the document"),
    ("#anchor", "points outside the document"),
])
def test_refs_that_do_not_resolve_locally_are_rejected(ref, complaint):
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"$ref": ref}}}
    with pytest.raises(InvalidRequest, match=complaint) as caught:
        check_schema_refs(schema)
    assert repr(ref) in caught.value.message


def test_text_is_compact_and_keeps_the_property_order():
    schema = {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}
    assert schema_text(schema, 1000, 10) == \
        '{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"integer"}}}'


def test_a_schema_over_the_byte_limit_names_the_limit():
    schema = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(100)}}
    with pytest.raises(InvalidRequest, match="at most 1000 bytes \\(grammar_max_schema_bytes\\)"):
        schema_text(schema, 1000, 10)


def test_bytes_are_counted_in_utf8():
    schema = {"enum": ["é" * 10]}  # {"enum":[""]} and 10 two-byte characters: 23 characters, 33 bytes
    assert len(schema_text(schema, 33, 10).encode()) == 33
    with pytest.raises(InvalidRequest, match="33 bytes"):
        schema_text(schema, 32, 10)


def test_nesting_past_the_depth_limit_names_the_limit():
    schema = {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {}}}}
    assert schema_text(schema, 1000, 4)
    with pytest.raises(InvalidRequest, match="deeper than 3 levels \\(grammar_max_schema_depth\\)"):
        schema_text(schema, 1000, 3)
