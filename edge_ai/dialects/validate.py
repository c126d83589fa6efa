"""Wire bodies into the dialect schemas: one validation, its first error as the client's 400."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edge_ai.errors import BadRequest

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not _is_type_tag(p))
        raise BadRequest(f"invalid '{loc}': {err['msg']}", param=loc or None) from None


def _is_type_tag(part: object) -> bool:
    """pydantic puts union member names (`str`, `list[ContentPart]`, …) into error locations."""
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or part.startswith("function-"))


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}
