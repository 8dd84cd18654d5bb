"""Structured output: the JSON Schema of ``--response_schema``, checking answers, Parquet columns.

The schema is loaded and checked once at the driver (:func:`load_schema`), carried to workers as
a :class:`StructuredOutput` (JSON text: picklable and hashable), sent with every request as
OpenAI's ``response_format`` (:meth:`StructuredOutput.response_format`), and each answer is parsed
and validated by an :class:`OutputValidator` compiled once per worker process.

Valid answers become ``Result.output``: a nested object ``output`` in JSONL results, and typed
top-level columns in Parquet results (:func:`parquet_fields`, :func:`parquet_values`):

============================  ===================
JSON Schema property          Parquet column
============================  ===================
``string`` / ``enum``         ``string``
``integer``                   ``int64``
``number``                    ``float64``
``boolean``                   ``bool``
array of strings              ``list<string>``
object, other arrays, mixed   ``string`` (JSON)
============================  ===================

Example::

    structured = load_schema("examples/triage_schema.json")
    validator = OutputValidator(structured.schema)
    value, problem = validator.check('{"reply": "..."}')   # (dict, None) or (None, "why")
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jsonschema
import pyarrow as pa

# How much of a validation error message is kept (messages may quote the whole instance).
MAX_ERROR_CHARS = 500

_NAME_OK = re.compile(r"[^a-zA-Z0-9_-]")


class SchemaLoadError(ValueError):
    """The schema file is unreadable, not JSON, not a JSON Schema, or not an object schema."""


@dataclasses.dataclass(frozen=True)
class StructuredOutput:
    """The requested output format, as the driver hands it to workers.

    Attributes:
      name: The ``json_schema.name`` sent to the provider (``[a-zA-Z0-9_-]{1,64}``).
      schema_json: The JSON Schema, as canonical JSON text.
      strict: Sent as ``json_schema.strict``.
    """
    name: str
    schema_json: str
    strict: bool = True

    @property
    def schema(self) -> Dict[str, Any]:
        return json.loads(self.schema_json)

    def response_format(self) -> Dict[str, Any]:
        """The request's ``response_format`` (OpenAI's structured outputs)."""
        return {"type": "json_schema",
                "json_schema": {"name": self.name, "schema": self.schema, "strict": self.strict}}


def schema_name(schema: Mapping[str, Any], path: str) -> str:
    """The ``json_schema.name``: the schema's ``title``, else the file name, made safe."""
    base = schema.get("title") if isinstance(schema.get("title"), str) else None
    if not base:
        base = os.path.splitext(os.path.basename(path))[0]
    name = _NAME_OK.sub("_", base)[:64]
    return name or "response"


def parse_schema(text: str, path: str = "schema") -> StructuredOutput:
    """Checks a JSON Schema's text and builds the :class:`StructuredOutput`.

    Raises:
      SchemaLoadError: not JSON, not a valid JSON Schema, or its root is not an object.
    """
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise SchemaLoadError(f"not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise SchemaLoadError("not a JSON Schema: the file must hold a JSON object")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        raise SchemaLoadError(f"not a valid JSON Schema at {where}: {exc.message}") from None
    # Providers' structured outputs (and one row per ticket) need an object at the root.
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise SchemaLoadError('the root must be {"type": "object", "properties": {...}}')
    for name in schema["properties"]:
        if name.startswith("_"):
            raise SchemaLoadError(f"property {name!r}: names may not start with '_'")
    return StructuredOutput(name=schema_name(schema, path),
                            schema_json=json.dumps(schema, ensure_ascii=False))


def load_schema(path: str) -> StructuredOutput:
    """Reads and checks a JSON Schema file (local path).

    Raises:
      SchemaLoadError: with a one-line reason.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaLoadError(f"cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_schema(text, path)


def schema_overhead_tokens(schema: Mapping[str, Any]) -> int:
    """Tokens the schema adds to every request: ceil(len(json.dumps(schema)) / 4).

    Providers compile the schema into the prompt, so the rate limiter's per-request estimate (and
    any cost estimate, e.g. a future ``--estimate``) must add this to the messages' tokens.
    """
    return math.ceil(len(json.dumps(schema)) / 4)


class OutputValidator:
    """Parses and validates answers against one schema; compile once per worker.

    Args:
      schema: The JSON Schema.
    """

    def __init__(self, schema: Mapping[str, Any]):
        cls = jsonschema.validators.validator_for(schema)
        self._validator = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def check(self, text: str) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        """Returns ``(value, None)`` for a valid answer, ``(None, problem)`` otherwise."""
        try:
            value = json.loads(text)
        except ValueError as exc:
            return None, f"the answer is not valid JSON ({exc})"
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is None:
            return value, None
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        message = f"the answer does not match the schema at {where}: {error.message}"
        if len(message) > MAX_ERROR_CHARS:
            message = message[:MAX_ERROR_CHARS] + "..."
        return None, message


def repair_messages(messages: Sequence[Mapping[str, str]], answer: str,
                    problem: str) -> List[Dict[str, str]]:
    """The follow-up conversation asking the model to fix an invalid answer."""
    return [dict(m) for m in messages] + [
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"Your answer is invalid: {problem}. Reply with the corrected "
                                    "JSON only, valid against the schema, and nothing else."},
    ]


# ---------------------------------------------------------------------------- Parquet columns

# Result columns a schema property may not take over in Parquet; such properties get OUTPUT_PREFIX.
OUTPUT_PREFIX = "output_"

_JSON = "json"


def _types(prop: Mapping[str, Any]) -> List[str]:
    kind = prop.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    return []


def _kind(prop: Any) -> str:
    """One of string, integer, number, boolean, list_string, json."""
    if not isinstance(prop, Mapping):
        return _JSON
    types = [t for t in _types(prop) if t != "null"]
    if "enum" in prop and not types:
        values = [v for v in prop["enum"] if v is not None]
        return "string" if all(isinstance(v, str) for v in values) else _JSON
    if "const" in prop and not types:
        return "string" if isinstance(prop["const"], str) else _JSON
    if len(types) != 1:
        return _JSON
    kind = types[0]
    if kind in ("string", "integer", "number", "boolean"):
        if "enum" in prop and kind == "string":
            return "string"
        return kind
    if kind == "array":
        items = prop.get("items")
        if isinstance(items, Mapping) and _kind(items) == "string":
            return "list_string"
    return _JSON


_ARROW = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "list_string": pa.list_(pa.string()),
    _JSON: pa.string(),
}


def column_names(schema: Mapping[str, Any], reserved: Sequence[str]) -> Dict[str, str]:
    """Property → Parquet column name; a property named like a reserved column gets a prefix.

    Raises:
      SchemaLoadError: when even the prefixed name is taken.
    """
    reserved = set(reserved)
    properties = list(schema.get("properties", {}))
    taken = reserved | set(properties)
    names: Dict[str, str] = {}
    for prop in properties:
        if prop not in reserved:
            names[prop] = prop
            continue
        column = OUTPUT_PREFIX + prop
        if column in taken:
            raise SchemaLoadError(f"property {prop!r} cannot become a Parquet column: both "
                                  f"{prop!r} and {column!r} are taken; rename it")
        taken.add(column)
        names[prop] = column
    return names


def parquet_fields(schema: Mapping[str, Any], reserved: Sequence[str] = ()) -> List[pa.Field]:
    """The typed Parquet columns of the schema's top-level properties (all nullable)."""
    names = column_names(schema, reserved)
    properties = schema.get("properties", {})
    return [pa.field(names[p], _ARROW[_kind(properties[p])]) for p in names]


def _convert(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == _JSON:
        return json.dumps(value, ensure_ascii=False)
    if kind == "string":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if kind == "number":
        return float(value)
    if kind == "integer":
        return int(value)
    return value


def parquet_values(schema: Mapping[str, Any], output: Optional[Mapping[str, Any]],
                   reserved: Sequence[str] = ()) -> Dict[str, Any]:
    """A result's output as ``{column: value}`` matching :func:`parquet_fields` (None if absent)."""
    names = column_names(schema, reserved)
    properties = schema.get("properties", {})
    output = output or {}
    return {names[p]: _convert(_kind(properties[p]), output.get(p)) for p in names}
