"""Custom resources checked against the CRDs their projects publish, vendored in deploy/helm/crd-schemas/
(kubernetes-validate knows only Kubernetes' own kinds: for any other it warns and passes).

A CRD's openAPIV3Schema is turned into a strict JSON Schema the way the API server reads it with strict
field validation (`kubectl apply --validate=strict`): an object with declared properties takes no
others unless it says `x-kubernetes-preserve-unknown-fields`; `x-kubernetes-int-or-string` is either
type; `nullable` admits null. Not checked offline: the CEL rules (`x-kubernetes-validations`), which need
an API server; test_helm_chart.py asserts what the InferencePool's two rules require."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jsonschema
import yaml

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "crd-schemas"


def strict(node):
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items() if not key.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out.pop("type"), "null"]
    out.pop("nullable", None)
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """{(apiVersion, kind): strict JSON Schema} of every served version of every vendored CRD."""
    schemas = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    # The API server checks metadata itself (ObjectMeta); a name is what a manifest must give.
                    schema["properties"]["metadata"] = {"type": "object", "required": ["name"]}
                    schema.setdefault("required", []).extend(["apiVersion", "kind", "metadata"])
                    schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return schemas


def validate_custom_resource(resource: dict) -> None:
    """Raise jsonschema.ValidationError, or KeyError when no vendored CRD defines the resource's kind."""
    schema = crd_schemas()[(resource["apiVersion"], resource["kind"])]
    jsonschema.Draft7Validator(schema).validate(resource)
