"""A property over generated function schemas: under tool_choice required or named, every call the real
server makes (bundled model, sampled, through the official client) parses and validates against its
function's schema. Strings and arrays are bounded so that a call always ends within the context (no
max_tokens: up to its end); a call cut off there would say so with finish_reason "length", and none may be."""

import json

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODEL = "turnout-tiny"
NAMES = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)

scalars = st.one_of(
    st.builds(lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
              st.integers(-50, 50), st.integers(0, 100)),
    st.just({"type": "boolean"}),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(0, 6)),
    st.builds(lambda values: {"enum": values}, st.lists(st.one_of(st.integers(-9, 9), NAMES), min_size=1,
                                                         max_size=4, unique=True)),
)


def objects(values):
    return st.dictionaries(NAMES, values, min_size=1, max_size=2).flatmap(
        lambda props: st.lists(st.sampled_from(sorted(props)), unique=True).map(
            lambda required: {"type": "object", "properties": props, "required": required}))


values = st.recursive(scalars, lambda inner: st.one_of(
    st.builds(lambda items, n: {"type": "array", "items": items, "maxItems": n}, inner, st.integers(0, 3)),
    objects(inner)), max_leaves=4)
parameters = objects(values)


def tool(name: str, schema: dict) -> dict:
    return {"type": "function", "function": {"name": name, "parameters": schema}}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=parameters, second=parameters, seed=st.integers(0, 2**16), named=st.booleans())
def test_every_constrained_call_validates_against_its_schema(client, first, second, seed, named):
    tools = [tool("first", first), tool("second", second)]
    choice = {"type": "function", "function": {"name": "second"}} if named else "required"
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Call a tool."}],
                                           tools=tools, tool_choice=choice, seed=seed,
                                           temperature=1.0).choices[0]
    assert reply.finish_reason == "tool_calls", reply
    assert reply.message.tool_calls
    schemas = {"first": first, "second": second}
    for call in reply.message.tool_calls:
        if named:
            assert call.function.name == "second"
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
