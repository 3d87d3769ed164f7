"""EventBridge event patterns: validate and compile once, match against the whole event.

The language is EventBridge's own (its engine is aws/event-ruler): a pattern is an
object whose leaves are arrays of exact values (strings, numbers, true, false, null)
or one-key operator objects (prefix, suffix, equals-ignore-case, wildcard,
anything-but, numeric, exists, cidr); `$or` takes two or more sub-patterns at any
level. A field matches when any value in its array matches; an event array matches
when any of its elements does; all fields of an object must match.

`compile_pattern` refuses what EventBridge refuses, raising PatternError with the
path inside the pattern (`detail.State[0].prefix`). `Pattern.matches` runs closures
built once; `Pattern.explain` walks the same compiled tree to name what failed.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Pattern", "PatternError", "compile_pattern", "names_field", "without_field"]


class PatternError(ValueError):
    """A pattern EventBridge would refuse; the message names the path inside the pattern."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()
_EMPTY: Final[Mapping[str, Any]] = {}
# event-ruler compares numbers in a fixed-point form limited to this range
_NUMERIC_LIMIT: Final = 5.0e9

Check = Callable[[Any], bool]
_Scalar = Callable[[Any], bool]


# --- compiled tree -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Leaf:
    """`key: [values...]`: `check` takes the raw event value (or MISSING)."""

    key: str
    path: str
    check: Check
    wanted: str


@dataclass(frozen=True, slots=True)
class _Object:
    """An object in the pattern: every field and every `$or` group must match."""

    path: str
    leaves: tuple[_Leaf, ...]
    nested: tuple[tuple[str, _Object], ...]
    ors: tuple[tuple[_Object, ...], ...]
    match_dict: Callable[[Mapping[str, Any]], bool]

    def match_value(self, raw: Any) -> bool:
        return _match_value(self.match_dict, raw)


def _match_value(match_dict: Callable[[Mapping[str, Any]], bool], raw: Any) -> bool:
    """A sub-pattern held against whatever the event has at its place."""
    if type(raw) is dict:
        return match_dict(raw)
    if type(raw) is list:
        # any one element must match the whole sub-pattern (event-ruler's
        # array-consistent matching); with no objects, every path below is absent
        objects = [item for item in _crush(raw) if isinstance(item, Mapping)]
        if objects:
            return any(match_dict(item) for item in objects)
        return match_dict(_EMPTY)
    if isinstance(raw, Mapping):
        return match_dict(raw)
    return match_dict(_EMPTY)


def _crush(values: list[Any]) -> list[Any]:
    """Nested event arrays count as one flat array, as in EventBridge."""
    if not any(type(item) is list for item in values):
        return values
    flat: list[Any] = []
    for item in values:
        if type(item) is list:
            flat.extend(_crush(item))
        else:
            flat.append(item)
    return flat


@dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled event pattern."""

    source: Mapping[str, Any]
    root: _Object

    def matches(self, event: Mapping[str, Any]) -> bool:
        return self.root.match_dict(event)

    def explain(self, event: Mapping[str, Any]) -> str | None:
        """None when the event matches, else the first part of the pattern that failed."""
        if self.root.match_dict(event):
            return None
        return _explain_object(self.root, event) or "the event does not match"


# --- explain -----------------------------------------------------------------


def _shown(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain_value(node: _Object, raw: Any) -> str | None:
    if type(raw) is list:
        objects = [item for item in _crush(raw) if isinstance(item, Mapping)]
        if objects:
            reasons = [_explain_object(node, item) for item in objects]
            if any(reason is None for reason in reasons):
                return None
            return f"no element of {node.path} matches ({reasons[0]})"
    if isinstance(raw, Mapping):
        return _explain_object(node, raw)
    return _explain_object(node, _EMPTY)


def _explain_object(node: _Object, value: Mapping[str, Any]) -> str | None:
    for leaf in node.leaves:
        raw = value.get(leaf.key, MISSING)
        if not leaf.check(raw):
            if raw is MISSING:
                return f"{leaf.path}: missing, wanted {leaf.wanted}"
            return f"{leaf.path}: {_shown(raw)} does not match {leaf.wanted}"
    for key, child in node.nested:
        reason = _explain_value(child, value.get(key, MISSING))
        if reason is not None:
            return reason
    for alternatives in node.ors:
        reasons = [_explain_object(alternative, value) for alternative in alternatives]
        if all(reason is not None for reason in reasons):
            where = f"{node.path}.$or" if node.path else "$or"
            return f"{where}: no alternative matches ({'; '.join(map(str, reasons))})"
    return None


# --- top-level fields ----------------------------------------------------------


def names_field(pattern: Mapping[str, Any], key: str) -> bool:
    """Does `pattern` hold `key` at its top level, or in a top-level `$or` alternative?"""
    if key in pattern:
        return True
    alternatives = pattern.get("$or")
    return isinstance(alternatives, list) and any(
        isinstance(item, Mapping) and names_field(item, key) for item in alternatives
    )


def without_field(pattern: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """What an event must match whatever its `key` holds: `pattern` without `key` and without
    a top-level `$or` that names it (they are and-ed, so dropping them only widens it).
    None when nothing is left: any event may match."""
    if "$or" in pattern and names_field({"$or": pattern["$or"]}, key):
        pattern = {k: v for k, v in pattern.items() if k != "$or"}
    rest = {k: v for k, v in pattern.items() if k != key}
    return rest or None


# --- compiling objects ---------------------------------------------------------


def compile_pattern(pattern: Mapping[str, Any], path: str = "") -> Pattern:
    """Validate `pattern` as EventBridge does and compile it; raises PatternError."""
    if not isinstance(pattern, Mapping):
        raise PatternError(path, "an event pattern must be a JSON object")
    return Pattern(pattern, _compile_object(pattern, path))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _compile_object(pattern: Mapping[str, Any], path: str) -> _Object:
    if not pattern:
        raise PatternError(path, "empty objects are not allowed")
    leaves: list[_Leaf] = []
    nested: list[tuple[str, _Object]] = []
    ors: list[tuple[_Object, ...]] = []
    for key, value in pattern.items():
        if not isinstance(key, str):
            raise PatternError(path, f"field names must be strings, got {key!r}")
        here = _join(path, key)
        if key == "$or":
            ors.append(_compile_or(value, here))
        elif isinstance(value, Mapping):
            nested.append((key, _compile_object(value, here)))
        elif isinstance(value, list):
            check, wanted = _compile_leaf(value, here)
            leaves.append(_Leaf(key, here, check, wanted))
        else:
            raise PatternError(here, "must be an array of match values or an object")
    match_dict = _object_matcher(
        tuple((leaf.key, leaf.check) for leaf in leaves),
        tuple((key, child.match_dict) for key, child in nested),
        tuple(tuple(alt.match_dict for alt in group) for group in ors),
    )
    return _Object(path, tuple(leaves), tuple(nested), tuple(ors), match_dict)


def _object_matcher(
    leaves: tuple[tuple[str, Check], ...],
    nested: tuple[tuple[str, Callable[[Mapping[str, Any]], bool]], ...],
    ors: tuple[tuple[Callable[[Mapping[str, Any]], bool], ...], ...],
) -> Callable[[Mapping[str, Any]], bool]:
    if len(leaves) == 1 and not nested and not ors:
        ((only_key, only_check),) = leaves

        def match_one(value: Mapping[str, Any]) -> bool:
            return only_check(value.get(only_key, MISSING))

        return match_one

    def match_dict(value: Mapping[str, Any]) -> bool:
        get = value.get
        for key, check in leaves:
            if not check(get(key, MISSING)):
                return False
        for key, child in nested:
            raw = get(key, MISSING)
            if not (child(raw) if type(raw) is dict else _match_value(child, raw)):
                return False
        for group in ors:
            if not any(alternative(value) for alternative in group):
                return False
        return True

    return match_dict


def _compile_or(value: Any, path: str) -> tuple[_Object, ...]:
    if not isinstance(value, list):
        raise PatternError(path, "$or must be an array of at least two pattern objects")
    if len(value) < 2:
        raise PatternError(path, f"$or needs at least two alternatives, got {len(value)}")
    alternatives = []
    for index, item in enumerate(value):
        here = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            raise PatternError(here, "each $or alternative must be a pattern object")
        alternatives.append(_compile_object(item, here))
    return tuple(alternatives)


# --- compiling leaves --------------------------------------------------------


def _never(value: Any) -> bool:
    return False


def _always(value: Any) -> bool:
    return True


def _any_of(tests: list[_Scalar]) -> _Scalar:
    if not tests:
        return _never
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda value: first(value) or second(value)
    fused = tuple(tests)
    return lambda value: any(test(value) for test in fused)


_NONE_TYPE: Final = type(None)


class _LeafBuilder:
    """Collects the conditions of one match array, then fuses them into one check."""

    def __init__(self) -> None:
        self.strings: set[str] = set()
        self.numbers: set[float] = set()
        self.string_tests: list[_Scalar] = []
        self.number_tests: list[_Scalar] = []
        self.true_tests: list[_Scalar] = []
        self.false_tests: list[_Scalar] = []
        self.null_tests: list[_Scalar] = []
        self.exists_true = False
        self.exists_false = False

    def add_constant(self, value: bool | None) -> None:
        {True: self.true_tests, False: self.false_tests, None: self.null_tests}[value].append(
            _always
        )

    def add_to_every_type(self, on_string: _Scalar, on_number: _Scalar) -> None:
        """anything-but: true for booleans and null, which it never excludes."""
        self.string_tests.append(on_string)
        self.number_tests.append(on_number)
        for tests in (self.true_tests, self.false_tests, self.null_tests):
            tests.append(_always)

    def _only_strings(self) -> bool:
        return not (
            self.numbers
            or self.string_tests
            or self.number_tests
            or self.true_tests
            or self.false_tests
            or self.null_tests
            or self.exists_true
            or self.exists_false
        )

    def build(self) -> Check:
        if self.strings and self._only_strings():
            return _exact_strings_check(frozenset(self.strings))
        strings, numbers = frozenset(self.strings), frozenset(self.numbers)
        on_string = ([strings.__contains__] if strings else []) + self.string_tests
        on_number = ([numbers.__contains__] if numbers else []) + self.number_tests
        on_true, on_false = _any_of(self.true_tests), _any_of(self.false_tests)
        exists_true, exists_false = self.exists_true, self.exists_false
        if exists_true:
            on_scalar: dict[type, _Scalar] = dict.fromkeys(
                (str, int, float, bool, _NONE_TYPE), _always
            )
        else:
            number_test = _any_of(on_number)
            on_scalar = {
                str: _any_of(on_string),
                int: number_test,
                float: number_test,
                bool: lambda value: on_true(value) if value else on_false(value),
                _NONE_TYPE: _any_of(self.null_tests),
            }
        scalar = on_scalar.get

        def check(raw: Any) -> bool:
            test = scalar(type(raw))
            if test is not None:
                return test(raw)
            if type(raw) is not list:
                # missing, or an object: exists applies to leaves only
                return exists_false
            seen_value = False
            for item in _crush(raw):
                test = scalar(type(item))
                if test is not None:
                    if test(item):
                        return True
                    seen_value = True
            return exists_false and not seen_value

        return check


def _exact_strings_check(strings: frozenset[str]) -> Check:
    """The common leaf, `["failed", "disabled"]`, fused into one closure."""
    if len(strings) == 1:
        (only,) = strings

        def check_one(raw: Any) -> bool:
            if type(raw) is str:
                return raw == only
            return type(raw) is list and only in _crush(raw)

        return check_one

    def check(raw: Any) -> bool:
        if type(raw) is str:
            return raw in strings
        return type(raw) is list and any(
            type(item) is str and item in strings for item in _crush(raw)
        )

    return check


def _compile_leaf(values: list[Any], path: str) -> tuple[Check, str]:
    if not values:
        raise PatternError(path, "empty arrays are not allowed")
    builder = _LeafBuilder()
    for index, item in enumerate(values):
        here = f"{path}[{index}]"
        if isinstance(item, Mapping):
            _add_operator(builder, item, here)
        elif isinstance(item, list):
            raise PatternError(here, "arrays cannot be nested inside a match array")
        elif isinstance(item, str):
            builder.strings.add(item)
        elif item is None or isinstance(item, bool):
            builder.add_constant(item)
        elif isinstance(item, int | float):
            builder.numbers.add(_number(item, here))
        else:
            raise PatternError(here, f"{type(item).__name__} is not a JSON value")
    return builder.build(), _shown(values, limit=120)


def _number(value: int | float, path: str) -> float:
    if isinstance(value, float) and not math.isfinite(value):
        raise PatternError(path, f"{value} is not a JSON number")
    return value


_OPERATORS: Final = (
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
)


def _add_operator(builder: _LeafBuilder, item: Mapping[str, Any], path: str) -> None:
    if len(item) != 1:
        raise PatternError(path, f"a match object must have exactly one key, got {len(item)}")
    ((name, value),) = item.items()
    here = _join(path, str(name))
    if name == "prefix" or name == "suffix":
        builder.string_tests.append(_affix_test(name, value, here))
    elif name == "equals-ignore-case":
        folded = _string(value, here, "equals-ignore-case").lower()
        builder.string_tests.append(lambda text: text.lower() == folded)
    elif name == "wildcard":
        regex = _wildcard(_string(value, here, "wildcard"), here)
        builder.string_tests.append(lambda text: regex.fullmatch(text) is not None)
    elif name == "anything-but":
        builder.add_to_every_type(*_anything_but(value, here))
    elif name == "numeric":
        builder.number_tests.append(_numeric(value, here))
    elif name == "exists":
        if not isinstance(value, bool):
            raise PatternError(here, "exists must be true or false")
        if value:
            builder.exists_true = True
        else:
            builder.exists_false = True
    elif name == "cidr":
        builder.string_tests.append(_cidr(value, here))
    else:
        known = ", ".join(_OPERATORS)
        raise PatternError(here, f"unrecognized match type {name!r} (use one of {known})")


def _string(value: Any, path: str, what: str) -> str:
    if not isinstance(value, str):
        raise PatternError(path, f"{what} match pattern must be a string")
    return value


def _affix_test(name: str, value: Any, path: str) -> _Scalar:
    if isinstance(value, Mapping):
        if set(value) != {"equals-ignore-case"}:
            raise PatternError(path, f'{name} takes a string or {{"equals-ignore-case": string}}')
        folded = _string(value["equals-ignore-case"], f"{path}.equals-ignore-case", name).lower()
        if name == "prefix":
            return lambda text: text.lower().startswith(folded)
        return lambda text: text.lower().endswith(folded)
    affix = _string(value, path, name)
    if name == "prefix":
        return lambda text: text.startswith(affix)
    return lambda text: text.endswith(affix)


def _wildcard(value: str, path: str) -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    previous_star = False
    while index < len(value):
        char = value[index]
        if char == "\\":
            following = value[index + 1 : index + 2]
            if following not in ("*", "\\"):
                raise PatternError(
                    path, "a backslash may only escape '*' or '\\' in a wildcard pattern"
                )
            parts.append(re.escape(following))
            index += 2
            previous_star = False
            continue
        if char == "*":
            if previous_star:
                raise PatternError(path, "consecutive wildcard characters are not allowed")
            parts.append(".*")
            previous_star = True
        else:
            parts.append(re.escape(char))
            previous_star = False
        index += 1
    return re.compile("".join(parts), re.DOTALL)


def _anything_but(value: Any, path: str) -> tuple[_Scalar, _Scalar]:
    """Tests for strings and for numbers, true for any value anything-but does not exclude."""
    if isinstance(value, Mapping):
        return _anything_but_operator(value, path)
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PatternError(path, "empty arrays are not allowed")
    strings: set[str] = set()
    numbers: set[float] = set()
    for index, item in enumerate(items):
        here = f"{path}[{index}]" if isinstance(value, list) else path
        if isinstance(item, str):
            strings.add(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            numbers.add(_number(item, here))
        else:
            raise PatternError(here, "anything-but takes strings or numbers")
    if strings and numbers:
        raise PatternError(path, "anything-but lists must hold only strings or only numbers")
    excluded_strings, excluded_numbers = frozenset(strings), frozenset(numbers)
    return (
        (lambda text: text not in excluded_strings) if strings else _always,
        (lambda number: number not in excluded_numbers) if numbers else _always,
    )


def _anything_but_operator(value: Mapping[str, Any], path: str) -> tuple[_Scalar, _Scalar]:
    if len(value) != 1:
        raise PatternError(path, f"a match object must have exactly one key, got {len(value)}")
    ((name, operand),) = value.items()
    here = _join(path, str(name))
    excluded: _Scalar
    if name in ("prefix", "suffix"):
        affix = _string(operand, here, name)
        if name == "prefix":
            excluded = lambda text: text.startswith(affix)  # noqa: E731
        else:
            excluded = lambda text: text.endswith(affix)  # noqa: E731
    elif name == "equals-ignore-case":
        folded = frozenset(text.lower() for text in _strings(operand, here, name))
        excluded = lambda text: text.lower() in folded  # noqa: E731
    elif name == "wildcard":
        regexes = tuple(_wildcard(text, here).fullmatch for text in _strings(operand, here, name))
        excluded = lambda text: any(regex(text) for regex in regexes)  # noqa: E731
    else:
        raise PatternError(
            here,
            f"unsupported anything-but match type {name!r}"
            " (use prefix, suffix, equals-ignore-case or wildcard)",
        )

    # operators that only apply to strings never exclude a number, boolean or null
    return (lambda text: not excluded(text)), _always


def _strings(value: Any, path: str, what: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PatternError(path, "empty arrays are not allowed")
    for index, item in enumerate(items):
        _string(item, f"{path}[{index}]" if isinstance(value, list) else path, what)
    return items


_LOWER: Final[dict[str, Callable[[float, float], bool]]] = {
    ">": lambda value, bound: value > bound,
    ">=": lambda value, bound: value >= bound,
}
_UPPER: Final[dict[str, Callable[[float, float], bool]]] = {
    "<": lambda value, bound: value < bound,
    "<=": lambda value, bound: value <= bound,
}


def _numeric(value: Any, path: str) -> _Scalar:
    if not isinstance(value, list) or not value:
        raise PatternError(path, 'numeric takes an array like [">", 0, "<=", 5]')
    if len(value) > 4:
        raise PatternError(path, "numeric takes at most two comparisons")
    if len(value) % 2:
        raise PatternError(path, "numeric takes operator, number pairs")
    comparisons: list[tuple[str, float]] = []
    for index in range(0, len(value), 2):
        operator, bound = value[index], value[index + 1]
        if operator not in ("=", "<", "<=", ">", ">="):
            raise PatternError(f"{path}[{index}]", f"unrecognized numeric operator {operator!r}")
        if not isinstance(bound, int | float) or isinstance(bound, bool):
            raise PatternError(f"{path}[{index + 1}]", f"{bound!r} is not a number")
        number = _number(bound, f"{path}[{index + 1}]")
        if not -_NUMERIC_LIMIT <= number <= _NUMERIC_LIMIT:
            raise PatternError(f"{path}[{index + 1}]", "numbers must be between -5e9 and 5e9")
        comparisons.append((operator, number))
    if len(comparisons) == 1:
        operator, bound = comparisons[0]
        if operator == "=":
            return lambda number: number == bound
        compare = _LOWER.get(operator) or _UPPER[operator]
        return lambda number: compare(number, bound)
    (low_op, low), (high_op, high) = comparisons
    if low_op not in _LOWER:
        raise PatternError(f"{path}[0]", "a numeric range starts with > or >=")
    if high_op not in _UPPER:
        raise PatternError(f"{path}[2]", "a numeric range ends with < or <=")
    if low >= high:
        raise PatternError(path, "the lower bound of a numeric range must be below the upper")
    above, below = _LOWER[low_op], _UPPER[high_op]
    return lambda number: above(number, low) and below(number, high)


def _cidr(value: Any, path: str) -> _Scalar:
    text = _string(value, path, "cidr")
    if "/" not in text:
        raise PatternError(path, f"{text!r} is not a CIDR block (like 10.0.0.0/24)")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise PatternError(path, f"{text!r} is not a CIDR block (like 10.0.0.0/24)") from None

    def test(candidate: str) -> bool:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            return False
        return address.version == network.version and address in network

    return test
