"""botocore's endpoint table, held only for the services amid makes clients for.

botocore's stock resolver parses all of `endpoints.json` (every service of every
partition) for any client, even one given an endpoint URL, and those ~6 MiB of
objects stay with the process. `lean_endpoint_resolver` reads the same file the
stock one would, streaming over it: each partition is kept whole except its
`services`, of which only `services` (amid's) are kept, so the installed
botocore's data is used as it is. Any other service is answered by a stock
resolver, built on its first use.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from botocore.loaders import JSONFileLoader, Loader
from botocore.regions import EndpointResolver

# Every service amid (daemon, doctor, tools) makes a client for.
AMID_SERVICES = frozenset({"dynamodb", "ec2", "events", "iam", "kms", "sns", "sqs", "sts"})

# botocore's loader reads its JSON into OrderedDicts; the kept parts are read the same way.
_DECODER = json.JSONDecoder(object_pairs_hook=OrderedDict)
_SPACE = re.compile(r"[ \t\n\r]*")
_SKIP = object()
_Reader = Callable[[str, int], tuple[Any, int]]


def stock_endpoint_resolver(loader: Loader) -> EndpointResolver:
    """What botocore's session builds: the whole table."""
    endpoints, path = loader.load_data_with_path("endpoints")
    return EndpointResolver(endpoints, uses_builtin_data=loader.is_builtin_path(path))


def lean_endpoint_resolver(
    loader: Loader, services: Iterable[str] = AMID_SERVICES
) -> EndpointResolver:
    """A resolver answering as the stock one does, holding only `services`' entries.

    With a loader or a data file it does not know (a custom loader, a gzipped
    table), it is the stock resolver.
    """
    path = _endpoints_file(loader)
    if path is None:
        return stock_endpoint_resolver(loader)
    with open(path, "rb") as file:  # as botocore reads it
        text = file.read().decode("utf-8")
    data = read_endpoints(text, frozenset(services))
    return LeanEndpointResolver(
        data,
        uses_builtin_data=loader.is_builtin_path(path),
        services=frozenset(services),
        whole=lambda: stock_endpoint_resolver(loader),
    )


class LeanEndpointResolver(EndpointResolver):  # type: ignore[misc]  # botocore is untyped
    """botocore's resolver over part of the table; other services go to `whole()`."""

    def __init__(
        self,
        endpoint_data: dict[str, Any],
        *,
        uses_builtin_data: bool,
        services: frozenset[str],
        whole: Callable[[], EndpointResolver],
    ) -> None:
        super().__init__(endpoint_data, uses_builtin_data=uses_builtin_data)
        self.services = services
        self._make_whole = whole
        self._whole: EndpointResolver | None = None

    def _for(self, service_name: str) -> EndpointResolver | None:
        """None when this resolver's own data answers for `service_name`."""
        if service_name in self.services:
            return None
        if self._whole is None:
            self._whole = self._make_whole()
        return self._whole

    def get_service_endpoints_data(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
        whole = self._for(service_name)
        if whole is not None:
            return whole.get_service_endpoints_data(service_name, *args, **kwargs)
        return super().get_service_endpoints_data(service_name, *args, **kwargs)

    def get_available_endpoints(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
        whole = self._for(service_name)
        if whole is not None:
            return whole.get_available_endpoints(service_name, *args, **kwargs)
        return super().get_available_endpoints(service_name, *args, **kwargs)

    def construct_endpoint(self, service_name: str, *args: Any, **kwargs: Any) -> Any:
        whole = self._for(service_name)
        if whole is not None:
            return whole.construct_endpoint(service_name, *args, **kwargs)
        return super().construct_endpoint(service_name, *args, **kwargs)


def _endpoints_file(loader: Loader) -> str | None:
    """The plain `endpoints.json` botocore's loader would read, or None if it would read
    something else (then the stock resolver is used)."""
    if type(loader) is not Loader or type(loader.file_loader) is not JSONFileLoader:
        return None
    for directory in loader.search_paths:  # the loader's order, first match wins
        if not os.path.isdir(directory):
            continue
        base = os.path.join(directory, "endpoints")
        if os.path.isfile(base + ".json"):
            return base + ".json"
        if os.path.isfile(base + ".json.gz"):
            return None
    return None


def read_endpoints(text: str, services: frozenset[str]) -> dict[str, Any]:
    """`endpoints.json` as json.loads reads it, but each partition's `services` holds only
    `services`. The others are parsed one at a time and dropped, so their memory is
    reused for the next instead of accumulating."""

    def service(name: str, at: int) -> tuple[Any, int]:
        value, end = _DECODER.raw_decode(text, at)
        return (value if name in services else _SKIP), end

    def partition_member(key: str, at: int) -> tuple[Any, int]:
        if key == "services":
            return _object(text, at, service)
        return _DECODER.raw_decode(text, at)

    def partition(at: int) -> tuple[Any, int]:
        return _object(text, at, partition_member)

    def top_member(key: str, at: int) -> tuple[Any, int]:
        if key == "partitions":
            return _array(text, at, partition)
        return _DECODER.raw_decode(text, at)

    data, end = _object(text, _space(text, 0), top_member)
    if _space(text, end) != len(text):
        raise ValueError(f"endpoints: extra data at character {end}")
    return data


def _space(text: str, at: int) -> int:
    match = _SPACE.match(text, at)
    assert match is not None  # noqa: S101 - the pattern matches the empty string
    return match.end()


def _expect(text: str, at: int, char: str) -> None:
    if text[at : at + 1] != char:
        raise ValueError(f"endpoints: expected {char!r} at character {at}")


def _object(text: str, at: int, read: _Reader) -> tuple[OrderedDict[str, Any], int]:
    """The object at `at`, each member's value read by `read(key, at)` (_SKIP drops it)."""
    _expect(text, at, "{")
    result: OrderedDict[str, Any] = OrderedDict()
    at = _space(text, at + 1)
    if text[at : at + 1] == "}":
        return result, at + 1
    while True:
        _expect(text, at, '"')
        key, at = _DECODER.raw_decode(text, at)
        at = _space(text, at)
        _expect(text, at, ":")
        value, at = read(key, _space(text, at + 1))
        if value is not _SKIP:
            result[key] = value
        at = _space(text, at)
        if text[at : at + 1] == "}":
            return result, at + 1
        _expect(text, at, ",")
        at = _space(text, at + 1)


def _array(text: str, at: int, read: Callable[[int], tuple[Any, int]]) -> tuple[list[Any], int]:
    _expect(text, at, "[")
    result: list[Any] = []
    at = _space(text, at + 1)
    if text[at : at + 1] == "]":
        return result, at + 1
    while True:
        value, at = read(at)
        result.append(value)
        at = _space(text, at)
        if text[at : at + 1] == "]":
            return result, at + 1
        _expect(text, at, ",")
        at = _space(text, at + 1)
