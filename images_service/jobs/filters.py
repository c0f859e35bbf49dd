"""Job filters: validate a request's MongoDB query, and decode it the same way for the scan.

A filter arrives as JSON (MongoDB query operators, Extended JSON values such as
``{"$oid": …}``), is stored on the job as that JSON text (``filter_json``) and is decoded
again by the scan. Both go through :func:`parse_filter`, one walk over the query that

- accepts only the query operators of :data:`QUERY_OPERATORS`; operators that run code or
  reach other collections (:data:`FORBIDDEN_OPERATORS`) and anything unknown are refused
  with ``invalid_filter`` (contract §7, §10);
- checks the structure MongoDB needs: ``$and/$or/$nor`` a non-empty list of objects,
  ``$in/$nin/$all`` a list, ``$regex`` a string that compiles, ``$options`` known flags;
- decodes Extended JSON *values* only (``$oid``, ``$date``, ``$numberLong`` …), never an
  operator object.

Why not ``bson.json_util.loads`` on the whole filter: it reads ``{"$regex": "^F"}`` as a
BSON ``Regex`` value (legacy Extended JSON), silently dropping any operator next to it
(``{"$regex": …, "$ne": …}``), and nx-27017 refuses ``Regex`` values ("type 'Regex' is not
supported", EMBEDDED_MONGO.md). Here ``$regex``/``$options`` stay strings, and a canonical
``{"$regularExpression": …}`` field value becomes ``{"$regex", "$options"}``: both servers
accept that form. Regular expressions inside ``$in``/``$nin``/``$all`` stay ``Regex`` values
(real MongoDB accepts them; nx-27017 refuses them, and the trigger's probe turns that into a
400).

``$expr`` is refused: it evaluates aggregation expressions per document, a language far
larger than the query operators (``$function`` lives there, ``$range``/``$reduce`` can
allocate without bound); the query operators select documents by their fields, which is what
a download filter is for.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bson import json_util
from bson.errors import BSONError
from bson.regex import Regex

from images_service.errors import InvalidFilter, InvalidRequest

#: Query operators accepted inside a field's condition (``{"price": {"$gt": 10}}``).
FIELD_OPERATORS = frozenset({
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$all", "$elemMatch", "$size",
    "$exists", "$type", "$mod", "$regex", "$options", "$not",
})
#: Query operators accepted where a query (not a field's condition) is expected.
LOGICAL_OPERATORS = frozenset({"$and", "$or", "$nor"})
QUERY_OPERATORS = FIELD_OPERATORS | LOGICAL_OPERATORS
#: Refused with a message saying why (they run code or reach beyond the collection).
FORBIDDEN_OPERATORS = frozenset({
    "$where", "$function", "$accumulator", "$eval", "$expr", "$lookup", "$graphLookup",
    "$unionWith", "$out", "$merge", "$jsonSchema",
})
#: Extended JSON value wrappers decoded to BSON values (``{"$date": …}``).
VALUE_WRAPPERS = frozenset({
    "$oid", "$date", "$numberLong", "$numberInt", "$numberDouble", "$numberDecimal",
    "$binary", "$uuid", "$timestamp", "$minKey", "$maxKey", "$regularExpression",
})
#: ``$options`` flags of MongoDB's ``$regex`` and the Python flags that check them.
REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "u": 0}
MAX_FILTER_DEPTH = 20
MAX_FILTER_BYTES = 64 * 1024


def check_filter(value: Any) -> dict[str, Any]:
    """Validate a request's filter (a JSON object); returns it decoded for pymongo."""
    if not isinstance(value, dict):
        raise InvalidRequest("filter must be a JSON object")
    text = json.dumps(value)
    if len(text.encode()) > MAX_FILTER_BYTES:
        raise InvalidRequest(f"filter is larger than {MAX_FILTER_BYTES} bytes")
    return parse_filter(value)


def decode_filter_json(text: str | None) -> dict[str, Any]:
    """A job's stored ``filter_json`` decoded for pymongo (the scan's side of check_filter)."""
    value = json.loads(text or "{}")
    if not isinstance(value, dict):
        raise InvalidFilter("stored filter is not a JSON object")
    return parse_filter(value)


def parse_filter(value: dict[str, Any]) -> dict[str, Any]:
    """Validate a filter parsed from plain JSON and decode its Extended JSON values."""
    return _query(value, 0)


def _deeper(depth: int) -> int:
    if depth >= MAX_FILTER_DEPTH:
        raise InvalidFilter(f"filter is nested deeper than {MAX_FILTER_DEPTH} levels")
    return depth + 1


def _check_key(key: str) -> None:
    if "\x00" in key:
        raise InvalidFilter("filter keys must not contain NUL")
    if key in FORBIDDEN_OPERATORS:
        raise InvalidFilter(f"operator {key} is not allowed in filters (it runs code or "
                            "reaches beyond the collection)")


def _query(doc: Any, depth: int) -> dict[str, Any]:
    """A query: field conditions and ``$and/$or/$nor``."""
    if not isinstance(doc, dict):
        raise InvalidFilter("a query must be an object")
    depth = _deeper(depth)
    out: dict[str, Any] = {}
    for key, item in doc.items():
        _check_key(key)
        if key in LOGICAL_OPERATORS:
            if not isinstance(item, list) or not item:
                raise InvalidFilter(f"{key} needs a non-empty list of queries")
            out[key] = [_query(clause, depth) for clause in item]
        elif key.startswith("$"):
            raise InvalidFilter(f"unknown or misplaced query operator {key}")
        else:
            out[key] = _condition(item, depth)
    return out


def _condition(item: Any, depth: int) -> Any:
    """A field's condition: an operator object, or a value to compare with."""
    if isinstance(item, dict) and any(k.startswith("$") for k in item):
        if any(k in VALUE_WRAPPERS for k in item):
            return _as_condition(_wrapper(item))
        return _operators(item, _deeper(depth))
    return _value(item, depth)


def _as_condition(value: Any) -> Any:
    # nx-27017 quirk: a Regex value in a query is refused; the operator form works on both.
    if isinstance(value, Regex):
        return {"$regex": value.pattern, "$options": _flags(value.flags)}
    return value


def _operators(ops: dict[str, Any], depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, operand in ops.items():
        _check_key(key)
        if key not in FIELD_OPERATORS:
            raise InvalidFilter(f"unknown or misplaced query operator {key}")
        if key in ("$in", "$nin", "$all"):
            if not isinstance(operand, list):
                raise InvalidFilter(f"{key} needs a list")
            out[key] = [_element(v, depth) if key == "$all" else _value(v, depth)
                        for v in operand]
        elif key == "$elemMatch":
            out[key] = _elem_match(operand, depth)
        elif key == "$not":
            negated = _condition(operand, depth)
            if not isinstance(negated, dict) or not all(k.startswith("$") for k in negated):
                raise InvalidFilter("$not needs an operator object or a regular expression")
            out[key] = negated
        elif key == "$size":
            if isinstance(operand, bool) or not isinstance(operand, int) or operand < 0:
                raise InvalidFilter("$size needs a non-negative integer")
            out[key] = operand
        elif key == "$mod":
            if (not isinstance(operand, list) or len(operand) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                               for v in operand)):
                raise InvalidFilter("$mod needs a list of two numbers [divisor, remainder]")
            out[key] = operand
        elif key in ("$regex", "$options"):
            if not isinstance(operand, str):
                raise InvalidFilter(f"{key} needs a string")
            out[key] = operand
        else:
            out[key] = _value(operand, depth)
    if "$options" in out and "$regex" not in out:
        raise InvalidFilter("$options needs $regex")
    if "$regex" in out:
        _check_regex(out["$regex"], out.get("$options", ""))
    return out


def _elem_match(operand: Any, depth: int) -> dict[str, Any]:
    if not isinstance(operand, dict):
        raise InvalidFilter("$elemMatch needs an object")
    if operand and all(k.startswith("$") and k not in LOGICAL_OPERATORS for k in operand):
        return _operators(operand, _deeper(depth))  # conditions on the elements themselves
    return _query(operand, depth)  # a query on sub-document elements


def _element(item: Any, depth: int) -> Any:
    # $all takes values, or {"$elemMatch": …} conditions.
    if isinstance(item, dict) and set(item) == {"$elemMatch"}:
        return {"$elemMatch": _elem_match(item["$elemMatch"], _deeper(depth))}
    return _value(item, depth)


def _value(item: Any, depth: int) -> Any:
    """A literal value; Extended JSON wrappers decoded, no operator allowed inside."""
    if isinstance(item, dict):
        if any(k in VALUE_WRAPPERS for k in item):
            return _wrapper(item)
        depth = _deeper(depth)
        for key in item:
            _check_key(key)
            if key.startswith("$"):
                raise InvalidFilter(f"unknown or misplaced query operator {key}")
        return {k: _value(v, depth) for k, v in item.items()}
    if isinstance(item, list):
        depth = _deeper(depth)
        return [_value(v, depth) for v in item]
    return item


def _wrapper(item: dict[str, Any]) -> Any:
    try:
        decoded = json_util.loads(json.dumps(item))
    except (ValueError, TypeError, KeyError, BSONError) as exc:
        raise InvalidFilter(f"invalid Extended JSON value {json.dumps(item)[:80]}: {exc}") from None
    if isinstance(decoded, dict):  # json_util did not recognise it as one value
        raise InvalidFilter(f"invalid Extended JSON value {json.dumps(item)[:80]}")
    return decoded


def _flags(flags: int | str) -> str:
    if isinstance(flags, str):
        return flags
    names = {re.IGNORECASE: "i", re.MULTILINE: "m", re.DOTALL: "s", re.VERBOSE: "x"}
    return "".join(letter for flag, letter in names.items() if flags & flag)


def _check_regex(pattern: str, options: str) -> None:
    unknown = set(options) - set(REGEX_FLAGS)
    if unknown:
        raise InvalidFilter(f"$options has unknown flags {''.join(sorted(unknown))!r}")
    flags = 0
    for letter in options:
        flags |= REGEX_FLAGS[letter]
    # Python's re is close to PCRE for the common subset; a pattern it cannot compile is
    # refused (conservative: a few PCRE-only constructs are refused too).
    try:
        re.compile(pattern, flags)
    except re.error as exc:
        raise InvalidFilter(f"$regex {pattern[:80]!r} does not compile: {exc}") from None
