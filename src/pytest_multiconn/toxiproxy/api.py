"""Toxiproxy's model over our proxies: proxies, toxics, their JSON shapes and units.

:class:`ToxiproxyAPI` is what toxiproxy's HTTP API does, as Python calls: each toxiproxy
*proxy* is one :class:`~pytest_multiconn.proxy.FaultProxy`, each *toxic* one of its faults.
The HTTP layer (:mod:`pytest_multiconn.toxiproxy.http`) only parses requests and calls this;
tests may call it directly.  Every method takes and returns toxiproxy's JSON shapes (plain
dicts) and raises :class:`~pytest_multiconn.errors.ToxiproxyError` with toxiproxy's status
code and message (``"proxy not found"``, 404) for what toxiproxy refuses.

Where toxiproxy's behaviour is an accident rather than a contract we differ, on purpose:

* ``seed`` seeds every random draw (toxicity, jitter, slicer sizes) of every proxy; toxiproxy
  builds a seeded generator and never uses it;
* listen and upstream addresses stay on loopback unless ``allow_remote=True``, and an empty
  listen host means ``127.0.0.1`` (for toxiproxy: every interface);
* attribute values are checked (a negative latency, a zero slicer size or an unknown attribute
  name is a 400 naming it; toxiproxy ignores unknown names and accepts negative numbers).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_multiconn.core.address import is_loopback, normalise_host, parse_hostport, parse_port
from pytest_multiconn.core.checks import check_count, check_fraction, check_seed
from pytest_multiconn.core.seed import derive_seed, get_run_seed
from pytest_multiconn.errors import MulticonnError, ToxiproxyError
from pytest_multiconn.proxy import TOXICS, FaultProxy, Toxic

STREAMS = ("upstream", "downstream")

# toxiproxy's error messages (api.go), word for word: clients match on some of them.
BAD_BODY = "bad request body"
MISSING_FIELD = "missing required field"
PROXY_NOT_FOUND = "proxy not found"
PROXY_EXISTS = "proxy already exists"
INVALID_STREAM = "stream was invalid, can be either upstream or downstream"
INVALID_TOXIC_TYPE = "invalid toxic type"
TOXIC_EXISTS = "toxic already exists"
TOXIC_NOT_FOUND = "toxic not found"


def bad_body(detail: str) -> ToxiproxyError:
    return ToxiproxyError(f"{BAD_BODY}: {detail}", 400)


# -- toxic types: toxiproxy's attribute names and units -> our toxics' parameters -------------
@dataclass(frozen=True)
class ToxicType:
    """One toxiproxy toxic type: its attribute names (in toxiproxy's units) and, for each,
    the parameter of our toxic that takes the same quantity in the same unit."""

    name: str
    #: ``(toxiproxy attribute, our parameter, unit)``, in toxiproxy's JSON order.
    attributes: tuple[tuple[str, str, str], ...]

    @property
    def toxic_class(self) -> type[Toxic]:
        return TOXICS[self.name]

    def parse(self, attrs: object, base: Mapping[str, int] | None = None) -> dict[str, int]:
        """Checked toxiproxy attributes: ``base`` (missing ones are 0, as in toxiproxy)
        updated with ``attrs``."""
        if attrs is None:
            attrs = {}
        if not isinstance(attrs, dict):
            raise bad_body(f"attributes must be a JSON object, got {_json_kind(attrs)}")
        known = [a for a, _, _ in self.attributes]  # in toxiproxy's JSON order
        unknown = sorted(set(attrs) - set(known))
        if unknown:
            raise bad_body(
                f"{self.name} has no attribute {', '.join(map(repr, unknown))}; "
                f"its attributes are: {self.describe()}"
            )
        result = dict(base) if base is not None else dict.fromkeys(known, 0)
        for key, value in attrs.items():
            # toxiproxy's attributes are int64: a fraction, a string or a bool is refused (a
            # 400 that names the attribute's unit; the range is our toxic's to check).
            try:
                result[key] = check_count(value, key, minimum=-(2**63), maximum=2**63 - 1)
            except ValueError:
                raise bad_body(
                    f"{self.name} attribute {key!r} must be an integer "
                    f"({self._unit(key)}), got {value!r}"
                ) from None
        return result

    def build(self, attrs: Mapping[str, int]) -> Toxic:
        """Our toxic for checked attributes (a 400 if our toxic refuses a value)."""
        params = {param: attrs[attr] for attr, param, _ in self.attributes}
        try:
            return self.toxic_class(**params)
        except (ValueError, TypeError) as exc:
            raise bad_body(f"{self.name} attributes {dict(attrs)}: {exc}") from None

    def describe(self) -> str:
        return ", ".join(f"{a} ({unit})" for a, _, unit in self.attributes)

    def _unit(self, attr: str) -> str:
        return next(unit for a, _, unit in self.attributes if a == attr)


#: The toxic types toxiproxy ships, by type name; units are toxiproxy's (and our toxics').
TOXIC_TYPES: dict[str, ToxicType] = {
    t.name: t
    for t in (
        ToxicType("latency", (("latency", "ms", "ms"), ("jitter", "jitter", "ms"))),
        ToxicType("bandwidth", (("rate", "rate", "KB/s, 1 KB = 1000 bytes"),)),
        ToxicType("slow_close", (("delay", "delay_ms", "ms"),)),
        ToxicType("timeout", (("timeout", "ms", "ms"),)),
        ToxicType("reset_peer", (("timeout", "timeout_ms", "ms"),)),
        ToxicType(
            "slicer",
            (
                ("average_size", "average_size", "bytes"),
                ("size_variation", "size_variation", "bytes"),
                ("delay", "delay_us", "microseconds"),
            ),
        ),
        ToxicType("limit_data", (("bytes", "bytes", "bytes"),)),
    )
}


# -- the model ------------------------------------------------------------------------------
@dataclass
class ToxicRecord:
    """A toxic as toxiproxy shows it; ``attributes`` are in toxiproxy's names and units."""

    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }


@dataclass
class ProxyRecord:
    """A toxiproxy proxy: its fields, its toxics, and the FaultProxy that does the work."""

    name: str
    listen: str  # as asked for until the proxy first listens, then the bound address
    upstream: str
    enabled: bool
    proxy: FaultProxy
    toxics: list[ToxicRecord] = field(default_factory=list)
    started: bool = False  # the FaultProxy was started once (then down()/up() toggle it)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.ordered_toxics()],
        }

    def ordered_toxics(self) -> list[ToxicRecord]:
        # toxiproxy lists the upstream chain, then the downstream chain, each in order added.
        return sorted(self.toxics, key=lambda t: STREAMS.index(t.stream))

    def toxic(self, name: str) -> ToxicRecord:
        for t in self.toxics:
            if t.name == name:
                return t
        raise ToxiproxyError(TOXIC_NOT_FOUND, 404)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _json_kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _string_field(body: Mapping[str, Any], key: str, where: str = "") -> str:
    value = body.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise bad_body(f"{key}{where} must be a string, got {value!r}")
    return value


@dataclass(frozen=True)
class ProxySpec:
    """A proxy as a request or a config file gives it (checked)."""

    name: str
    listen: str
    upstream: str
    enabled: bool | None  # None: not given

    @classmethod
    def from_json(cls, body: object, where: str = "") -> ProxySpec:
        """Check one proxy object of ``POST /proxies``, ``/populate`` or a config file."""
        if not isinstance(body, dict):
            raise bad_body(f"expected a JSON object{where}, got {_json_kind(body)}")
        name = _string_field(body, "name", where)
        upstream = _string_field(body, "upstream", where)
        listen = _string_field(body, "listen", where)
        enabled = body.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise bad_body(f"enabled{where} must be true or false, got {enabled!r}")
        if not name:
            raise ToxiproxyError(f"{MISSING_FIELD}: name{where}", 400)
        if not upstream:
            raise ToxiproxyError(f"{MISSING_FIELD}: upstream{where}", 400)
        return cls(name, listen, upstream, enabled)


def parse_populate(body: object, source: str = "request") -> list[ProxySpec]:
    """Check a populate list (``POST /populate`` or a ``--config`` file) before using any of
    it, as toxiproxy does; ``source`` names it in messages."""
    if not isinstance(body, list):
        raise bad_body(f"{source}: expected a JSON array of proxies, got {_json_kind(body)}")
    specs = [ProxySpec.from_json(item, f" at proxy {i}") for i, item in enumerate(body, 1)]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise bad_body(f"{source}: proxy names given twice: {', '.join(duplicates)}")
    return specs


class ToxiproxyAPI:
    """Toxiproxy's proxies and toxics over :class:`FaultProxy` (thread-safe).

    ``seed`` (default: the run seed) seeds every proxy: proxy ``name`` draws from
    ``derive_seed(seed, "toxiproxy", name)``, so a proxy's schedule does not depend on the
    others.  ``proxy_options`` go to every ``FaultProxy`` (``timeout``, ``high_water``...).
    """

    def __init__(
        self,
        *,
        seed: int | None = None,
        allow_remote: bool = False,
        proxy_options: Mapping[str, Any] | None = None,
    ) -> None:
        given = check_seed(seed, "seed", optional=True)
        self.seed = get_run_seed() if given is None else given
        self.allow_remote = allow_remote
        self.proxy_options = dict(proxy_options or {})
        self._proxies: dict[str, ProxyRecord] = {}
        # One request at a time, as toxiproxy's collection lock: the HTTP loop thread and a
        # test thread may both call in.
        self._lock = threading.RLock()
        self._closed = False
        # Stopped proxies, for check(): a loop error in a deleted proxy still fails the test.
        self._retired: deque[FaultProxy] = deque(maxlen=256)

    def __repr__(self) -> str:
        return f"<ToxiproxyAPI seed={self.seed} proxies={list(self._proxies)}>"

    # -- helpers --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise ToxiproxyError("the toxiproxy server is stopping", 503)
            yield

    def _get(self, name: str) -> ProxyRecord:
        try:
            return self._proxies[name]
        except KeyError:
            raise ToxiproxyError(PROXY_NOT_FOUND, 404) from None

    def proxy_seed(self, name: str) -> int:
        """The seed proxy ``name`` draws from (reported so a run can be replayed)."""
        return derive_seed(self.seed, "toxiproxy", name)

    def _listen_address(self, listen: str) -> tuple[str, int]:
        if not listen:
            return "127.0.0.1", 0
        host, sep, port_text = listen.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            if not sep:
                raise ValueError(listen)
            port = parse_port(port_text)
        except ValueError:
            raise ToxiproxyError(f"listen: expected HOST:PORT, got {listen!r}", 400) from None
        # toxiproxy takes ":PORT" (an empty host) as every interface; we keep it on loopback.
        host = normalise_host(host) if host else "127.0.0.1"
        if not self.allow_remote and not is_loopback(host):
            raise ToxiproxyError(
                f"listen {listen!r} is not a loopback address; this server keeps proxies on "
                "127.0.0.0/8 and ::1 unless started with allow_remote (--allow-remote)", 400
            )
        return host, port

    def _upstream_address(self, upstream: str) -> tuple[str, int]:
        try:
            host, port = parse_hostport(upstream)
        except MulticonnError:
            raise ToxiproxyError(f"upstream: expected HOST:PORT, got {upstream!r}", 400) from None
        if not self.allow_remote and not is_loopback(host):
            raise ToxiproxyError(
                f"upstream {upstream!r} is not a loopback address; this server proxies only "
                "to 127.0.0.0/8 and ::1 unless started with allow_remote (--allow-remote)", 400
            )
        return host, port

    def _make(self, spec: ProxySpec, enabled: bool) -> ProxyRecord:
        listen = self._listen_address(spec.listen)
        try:
            proxy = FaultProxy(
                self._upstream_address(spec.upstream),
                listen,
                seed=self.proxy_seed(spec.name),
                allow_remote=self.allow_remote,
                **self.proxy_options,
            )
        except (ValueError, TypeError) as exc:
            raise ToxiproxyError(f"proxy {spec.name!r}: {exc}", 400) from None
        record = ProxyRecord(
            spec.name, format_hostport(*listen), spec.upstream, False, proxy
        )
        if enabled:
            self._enable(record)
        return record

    def _enable(self, record: ProxyRecord) -> None:
        if record.enabled:
            return
        proxy = record.proxy
        try:
            if record.started:
                proxy.up()
            else:
                proxy.start()
                record.started = True
        except OSError as exc:
            # toxiproxy answers a failed listen with a 500 and the error text.
            raise ToxiproxyError(f"proxy {record.name!r}: cannot listen on "
                                 f"{record.listen}: {exc}", 500) from None
        record.listen = format_hostport(proxy.host, proxy.port)
        record.enabled = True

    @staticmethod
    def _disable(record: ProxyRecord) -> None:
        if record.enabled:
            record.proxy.down()
            record.enabled = False

    def _differs(self, record: ProxyRecord, spec: ProxySpec) -> bool:
        # As toxiproxy's Proxy.Differs: the listen address as given (resolved) against the
        # one in use, and the upstream text.
        return (format_hostport(*self._listen_address(spec.listen)) != record.listen
                or spec.upstream != record.upstream)

    # -- proxies ----------------------------------------------------------------------------
    def proxies(self) -> dict[str, Any]:
        """``GET /proxies``: every proxy with its toxics, by name."""
        with self._locked():
            return {name: r.to_json() for name, r in self._proxies.items()}

    def create(self, body: object) -> dict[str, Any]:
        """``POST /proxies`` (201): a new proxy, enabled unless ``"enabled": false``."""
        spec = ProxySpec.from_json(body)
        with self._locked():
            if spec.name in self._proxies:
                raise ToxiproxyError(PROXY_EXISTS, 409)
            record = self._make(spec, True if spec.enabled is None else spec.enabled)
            self._proxies[spec.name] = record
            return record.to_json()

    def populate(self, body: object, source: str = "request") -> list[dict[str, Any]]:
        """``POST /populate`` (201): create or replace proxies; a proxy whose listen and
        upstream are unchanged is kept as it is (toxics and all)."""
        specs = parse_populate(body, source)
        with self._locked():
            done: list[dict[str, Any]] = []
            for spec in specs:
                try:
                    done.append(self._populate_one(spec))
                except ToxiproxyError as exc:
                    exc.populated = done  # POST /populate answers with what it did
                    raise
            return done

    def _populate_one(self, spec: ProxySpec) -> dict[str, Any]:
        existing = self._proxies.get(spec.name)
        if existing is not None:
            if not self._differs(existing, spec):
                return existing.to_json()
            self._stop_record(existing)
            del self._proxies[spec.name]
        record = self._make(spec, True if spec.enabled is None else spec.enabled)
        self._proxies[spec.name] = record
        return record.to_json()

    def show(self, name: str) -> dict[str, Any]:
        """``GET /proxies/{name}``."""
        with self._locked():
            return self._get(name).to_json()

    def update(self, name: str, body: object) -> dict[str, Any]:
        """``POST``/``PATCH /proxies/{name}``: change ``listen``/``upstream`` (restarts the
        proxy, dropping its connections) and ``enabled`` (false: stop listening and cut
        every connection, like toxiproxy's "down")."""
        with self._locked():
            record = self._get(name)
            if not isinstance(body, dict):
                raise bad_body(f"expected a JSON object, got {_json_kind(body)}")
            merged = {"name": name, "listen": record.listen, "upstream": record.upstream,
                      "enabled": record.enabled, **body}
            merged["name"] = name  # a proxy is renamed by deleting and creating it
            spec = ProxySpec.from_json(merged)
            # "enabled": null changes nothing, as in Go's JSON decoding.
            enabled = record.enabled if spec.enabled is None else spec.enabled
            if self._differs(record, spec):
                new = self._make(spec, False)
                for toxic in record.ordered_toxics():
                    self._add_to(new.proxy, toxic)
                new.toxics = list(record.toxics)
                self._stop_record(record)
                self._proxies[name] = record = new
            if enabled:
                self._enable(record)
            else:
                self._disable(record)
            return record.to_json()

    def delete(self, name: str) -> None:
        """``DELETE /proxies/{name}`` (204)."""
        with self._locked():
            record = self._get(name)
            self._stop_record(record)
            del self._proxies[name]

    def reset(self) -> None:
        """``POST /reset`` (204): enable every proxy and remove every toxic."""
        with self._locked():
            for record in self._proxies.values():
                self._enable(record)
                for toxic in list(record.toxics):
                    record.proxy.remove(toxic.name)
                record.toxics.clear()

    # -- toxics ---------------------------------------------------------------------------------
    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        """``GET /proxies/{proxy}/toxics``."""
        with self._locked():
            return [t.to_json() for t in self._get(proxy).ordered_toxics()]

    def add_toxic(self, proxy: str, body: object) -> dict[str, Any]:
        """``POST /proxies/{proxy}/toxics`` (200, as toxiproxy): ``type``, ``stream`` (default
        downstream), ``name`` (default ``<type>_<stream>``), ``toxicity`` (default 1) and
        ``attributes`` in toxiproxy's units."""
        with self._locked():
            record = self._get(proxy)
            if not isinstance(body, dict):
                raise bad_body(f"expected a JSON object, got {_json_kind(body)}")
            stream = _string_field(body, "stream") or "downstream"
            if stream.lower() not in STREAMS:
                raise ToxiproxyError(INVALID_STREAM, 400)
            stream = stream.lower()
            kind = _string_field(body, "type")
            name = _string_field(body, "name") or f"{kind}_{stream}"
            toxic_type = TOXIC_TYPES.get(kind)
            if toxic_type is None or kind not in TOXICS:
                raise ToxiproxyError(INVALID_TOXIC_TYPE, 400)
            if any(t.name == name for t in record.toxics):
                raise ToxiproxyError(TOXIC_EXISTS, 409)
            toxicity = _toxicity(body.get("toxicity", 1.0))
            attrs = toxic_type.parse(body.get("attributes"))
            toxic = ToxicRecord(name, kind, stream, toxicity, attrs)
            self._add_to(record.proxy, toxic)
            record.toxics.append(toxic)
            return toxic.to_json()

    @staticmethod
    def _add_to(proxy: FaultProxy, toxic: ToxicRecord) -> None:
        built = TOXIC_TYPES[toxic.type].build(toxic.attributes)
        proxy.add(built, direction=toxic.stream,  # type: ignore[arg-type]
                  probability=toxic.toxicity, name=toxic.name)

    def show_toxic(self, proxy: str, toxic: str) -> dict[str, Any]:
        """``GET /proxies/{proxy}/toxics/{toxic}``."""
        with self._locked():
            return self._get(proxy).toxic(toxic).to_json()

    def update_toxic(self, proxy: str, toxic: str, body: object) -> dict[str, Any]:
        """``POST``/``PATCH /proxies/{proxy}/toxics/{toxic}``: ``attributes`` given replace
        those values (the others stay), ``toxicity`` applies to connections made from now."""
        with self._locked():
            record = self._get(proxy)
            current = record.toxic(toxic)
            if not isinstance(body, dict):
                raise bad_body(f"expected a JSON object, got {_json_kind(body)}")
            toxic_type = TOXIC_TYPES[current.type]
            attrs = toxic_type.parse(body.get("attributes"), base=current.attributes)
            toxicity = _toxicity(body.get("toxicity", current.toxicity))
            built = toxic_type.build(attrs)
            params = {param: getattr(built, param) for _, param, _ in toxic_type.attributes}
            record.proxy.update(current.name, probability=toxicity, **params)
            current.attributes = attrs
            current.toxicity = toxicity
            return current.to_json()

    def delete_toxic(self, proxy: str, toxic: str) -> None:
        """``DELETE /proxies/{proxy}/toxics/{toxic}`` (204); bytes it held pass on at once."""
        with self._locked():
            record = self._get(proxy)
            current = record.toxic(toxic)
            record.proxy.remove(current.name)
            record.toxics.remove(current)

    # -- in-process conveniences -----------------------------------------------------------------
    def fault_proxy(self, name: str) -> FaultProxy:
        """The :class:`FaultProxy` behind proxy ``name`` (transcripts, step mode...)."""
        with self._locked():
            return self._get(name).proxy

    def summary(self) -> list[str]:
        """One line per proxy: name, addresses, state, seed and toxics (for reports; each
        FaultProxy reports its own connections)."""
        with self._lock:
            lines = [f"seed={self.seed}"]
            for r in self._proxies.values():
                toxics = ", ".join(f"{t.name}={t.attributes}" for t in r.ordered_toxics())
                lines.append(f"proxy {r.name!r} {r.listen} -> {r.upstream} "
                             f"{'enabled' if r.enabled else 'disabled'} seed={r.proxy.seed}"
                             f"{' toxics: ' + toxics if toxics else ''}")
            return lines

    # -- shutdown ------------------------------------------------------------------------------
    def _stop_record(self, record: ProxyRecord) -> None:
        record.enabled = False
        record.proxy.stop()
        self._retired.append(record.proxy)

    def check(self) -> None:
        """Re-raise the first error a proxy's loop thread recorded (live or stopped ones)."""
        with self._lock:
            proxies = [*self._retired, *(r.proxy for r in self._proxies.values())]
        for proxy in proxies:
            proxy.check()

    def close(self) -> None:
        """Stop every proxy (idempotent); later requests get a 503."""
        with self._lock:
            self._closed = True
            records, self._proxies = list(self._proxies.values()), {}
        errors: list[BaseException] = []
        for record in records:
            try:
                self._stop_record(record)
            except BaseException as exc:  # noqa: BLE001 - every proxy is stopped first
                errors.append(exc)
        if errors:
            raise errors[0]


def _toxicity(value: object) -> float:
    try:
        return check_fraction(value, "toxicity")
    except ValueError as exc:
        raise bad_body(str(exc)) from None  # a JSON field: a 400, not a ValueError


__all__ = [
    "TOXIC_TYPES",
    "ProxyRecord",
    "ProxySpec",
    "ToxicRecord",
    "ToxicType",
    "ToxiproxyAPI",
    "parse_populate",
]
