"""The one way results types become JSON and come back: pydantic over the package's dataclasses.

Every results type is a plain (mostly frozen) dataclass with typed fields; `dump` turns one into
JSON-ready data and `read` validates JSON data back into it, with a one-line error that names
the source and the field path. JSON has no NaN or infinity: non-finite floats are written as
null, and a `Real` field reads null back as NaN (a field typed `float | None` reads it as None).

A few types keep a custom piece, each for a layout the files had before this module:
`Item` is written in the form it is read from (`prompt` + `answer`, or `text`);
`FisherGroup` keeps its comparison's numbers beside `layer` and `component`;
`FisherSummary.quantiles` is a list of `[level, value]` pairs (JSON keys cannot be numbers);
`ReversibilityPredictor.target_range` reads an unbounded side (null) as ±inf; and
`StudyConfig.from_dict` stays the settings reader of study.toml files (unknown keys named,
TOML values coerced, every setting validated). Derived views that readers of the JSON use
(`head_share`, `steps_to_half_recovery`, …) are pydantic computed fields: written, never read.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import SkipJsonSchema

from unlearn_lens.atomic import json_safe
from unlearn_lens.errors import ConfigError

T = TypeVar("T")


def _null_as_nan(value: Any) -> Any:
    return math.nan if value is None else value


Real = Annotated[
    float,
    BeforeValidator(_null_as_nan),
    WithJsonSchema({"type": ["number", "null"], "description": "null stands for NaN or ±inf"}),
]
"""A float that may be NaN or infinite: written as null, read back as NaN."""

InMemory = Annotated[
    T,
    PlainValidator(lambda value: value),
    PlainSerializer(lambda value: None),
    Field(exclude=True),
    SkipJsonSchema(),
]
"""`InMemory[X]`: a field held in memory only (weight snapshots): never written, absent when read."""


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter(cls: Any) -> TypeAdapter:  # bare: beartype cannot check a subscripted pydantic generic
    """The pydantic adapter of a results type, built once."""
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


def dump(value: Any) -> Any:
    """JSON-ready data of a results object (dataclass, or a list/dict of them)."""
    return json_safe(adapter(type(value)).dump_python(value, mode="json", by_alias=True))


def read(cls: type[T], data: Any, source: str = "<data>") -> T:
    """`data` (parsed JSON) validated as `cls`; anything malformed is a `ConfigError` naming
    `source` and the path of the first field at fault."""
    try:
        return adapter(cls).validate_python(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {describe(error)}") from None


def describe(error: ValidationError) -> str:
    """The first error of a validation as `path.to[3].field: message` (and how many more)."""
    first = error.errors()[0]
    path = ""
    for part in first["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    more = error.error_count() - 1
    where = f"{path}: " if path else ""
    return f"{where}{first['msg']}" + (f" (and {more} more)" if more else "")


def json_schema(cls: Any, title: str) -> dict[str, Any]:
    """The JSON Schema of the files `dump` writes for `cls` (what they hold, nulls included)."""
    schema = adapter(cls).json_schema(mode="serialization", by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **schema}


def schema_text(cls: Any, title: str) -> str:
    """`json_schema` as the text of a shipped `.schema.json` file."""
    return json.dumps(json_schema(cls, title), indent=2, sort_keys=True) + "\n"
