"""Validate gateway output against the schemas of OpenAI's OpenAPI spec (shared/specs)."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from aiproxy.testing.gateway import REPO_ROOT

SPEC = REPO_ROOT.parent / "shared" / "specs" / "openai-openapi.yaml"


def _nullable_to_jsonschema(node):
    """The spec still uses OpenAPI 3.0's `nullable: true`; JSON Schema needs null in the type."""
    if isinstance(node, list):
        return [_nullable_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_to_jsonschema(value) for key, value in node.items()}
    if node.pop("nullable", False):
        if "$ref" in node:
            return {"anyOf": [{"$ref": node.pop("$ref")}, {"type": "null"}], **node}
        if "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            node["type"] = [*types, "null"]
            if "enum" in node:
                node["enum"] = [*node["enum"], None]
        else:
            return {"anyOf": [node, {"type": "null"}]}
    return node


class OpenAISchemas:
    def __init__(self, spec_path: Path = SPEC) -> None:
        with open(spec_path, encoding="utf-8") as handle:
            spec = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self._spec = _nullable_to_jsonschema(spec)
        self._registry = Registry().with_resource("urn:openai", DRAFT202012.create_resource(self._spec))

    @functools.cache  # noqa: B019 - one instance per test session
    def _validator(self, name: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"urn:openai#/components/schemas/{name}"}, registry=self._registry)

    def validate(self, name: str, instance) -> None:
        """Raise jsonschema.ValidationError when instance does not match components/schemas/<name>."""
        self._validator(name).validate(instance)
