"""Energy from Prometheus queries, as LensKit configures them (``[machines.NAME] power_queries``).

Source of the numbers: an instant query to ``<url>/api/v1/query`` for each configured scope
(``system``, ``cpu``, ``gpu``; sent together, one round trip for all), evaluated at the task's
end (``time=`` the task's ``finish_time``), so that it gives the same result whenever it is
sent: the queries run after the task's own figures are taken, and for a task nested in a running
task of this process, off the task's path (:mod:`tasktrace.task.late`), never inside its
parent's duration. Each query is a Python format string; ``{elapsed}`` becomes the task's
duration in whole milliseconds, truncated as LensKit truncates it (``int(duration_s * 1000)``;
at least 1, where LensKit would send an invalid ``[0ms]`` range), and ``{machine}`` the
machine label, so a query such as
``sum(increase(node_energy_joules_total{{instance="{machine}"}}[{elapsed}ms]))`` gives the joules
spent over the task. A scalar result is used as is; of a vector result, the first series is
used, as LensKit does, and a result of several series is warned about once per query (LensKit
logs an error): wrap the query in ``sum(...)`` to add them up.

The value is whatever the query measures (usually machine- or package-wide), not this process's
share. Resolution is the scrape interval of the series: a task shorter than it is flagged.
Failure never reaches the task: an unreachable, failing or slow server (beyond ``timeout_s``) gives
``None`` and one warning per server, then stays quiet, and no query is sent for
``retry_after_s``; a query that returns an error or no series gives ``None`` and one warning per
query. No series over a window under twice ``scrape_interval_s`` is said to be for that cause:
``increase()`` needs two samples in its window, which a window shorter than the scrape interval
never holds (and one under twice it not always). A URL with a user name and password
(``http://user:pw@host:9090``) is queried with HTTP basic authentication, as LensKit's
``requests`` does; messages show it without the password.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.redact import mask_url
from tasktrace.core.warn import WarnOnce
from tasktrace.meters.base import LateReading, MeterReading

__all__ = [
    "SCOPE_FIELDS",
    "SELECT_MACHINE_HINT",
    "PrometheusMeter",
    "PrometheusNoSeries",
    "PrometheusQueryError",
    "is_http_url",
    "query_prometheus",
]

SELECT_MACHINE_HINT = (
    'machine = "NAME" in lenskit.local.toml, LK_MACHINE=NAME or TASKTRACE_MACHINE=NAME'
)
"""The ways to select a machine, as the warnings and :attr:`PrometheusMeter.reason` name them."""

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

SCOPE_FIELDS = {"system": "system_power", "cpu": "cpu_power", "gpu": "gpu_power"}
"""``power_queries`` key → :class:`tasktrace.Task` energy field (joules)."""


class PrometheusQueryError(Exception):
    """Prometheus answered, but the query failed or gave no usable number."""


class PrometheusNoSeries(PrometheusQueryError):
    """Prometheus answered with an empty vector: no series matched, or none had samples."""


def query_prometheus(
    url: str, query: str, timeout_s: float, eval_time_s: float | None = None
) -> list[float]:
    """Run one instant query and return its values.

    Args:
        url: Base URL of the server, e.g. ``http://127.0.0.1:9090``; a user name and password
            in it are sent as HTTP basic authentication.
        query: PromQL, already formatted.
        timeout_s: Timeout of each socket operation (connect, each read), in seconds.
        eval_time_s: Evaluation time, Unix seconds (the ``time`` parameter); ``None``: the
            server's now.

    Returns:
        ``[scalar]``, or the value of each series of the vector, in the server's order (at
        least one).

    Raises:
        PrometheusQueryError: The server answered with an error, an empty vector
            (:class:`PrometheusNoSeries`), a non-finite value or an unexpected shape.
        OSError: The server could not be reached or was too slow (``TimeoutError``,
            ``urllib.error.URLError``), or answered with an HTTP error without a Prometheus body.
    """
    scheme, netloc, path, url_query, _ = urllib.parse.urlsplit(url)
    headers = {"Accept": "application/json"}
    user_info, at, host = netloc.rpartition("@")
    if at:  # user and password, percent-decoded as requests decodes them for LensKit
        user, _, password = user_info.partition(":")
        unquote = urllib.parse.unquote
        credentials = f"{unquote(user)}:{unquote(password)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        netloc = host
    params = {"query": query}
    if eval_time_s is not None:
        params["time"] = f"{eval_time_s:.3f}"
    endpoint = (
        urllib.parse.urlunsplit((scheme, netloc, path, url_query, "")).rstrip("/")
        + "/api/v1/query?"
        + urllib.parse.urlencode(params)
    )
    request = urllib.request.Request(endpoint, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            body = json.load(response)
    except urllib.error.HTTPError as e:  # 4xx/5xx; Prometheus puts its error in the body
        try:
            body = json.load(e)
        except ValueError:
            raise e from None
        finally:
            e.close()
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", body) if isinstance(body, dict) else body
        raise PrometheusQueryError(f"query failed: {error}")
    return _values(body.get("data", {}))


def is_http_url(url: str) -> bool:
    """Whether ``url`` is ``http://host...`` or ``https://host...``, a URL a query can use.

    Spaces and control characters are refused too: ``urllib`` cannot send them.
    """
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host)


def _values(data: Mapping[str, Any]) -> list[float]:
    kind = data.get("resultType")
    result = data.get("result")
    try:
        if kind == "scalar":
            values = [float(result[1])]  # type: ignore[index]
        elif kind == "vector":
            values = [float(sample["value"][1]) for sample in result]  # type: ignore[union-attr]
        else:
            raise PrometheusQueryError(f"unexpected result type {kind!r}")
    except (TypeError, KeyError, IndexError, ValueError) as e:
        raise PrometheusQueryError(f"unexpected result {result!r}") from e
    if not values:
        raise PrometheusNoSeries("query returned no series (is the metric scraped?)")
    if not math.isfinite(values[0]):
        raise PrometheusQueryError(f"query returned {values[0]}")
    return values


class PrometheusMeter:
    """Energy per scope from the configured Prometheus queries, read at the task's finish only.

    Reports, for each scope with a query, ``<scope>_power`` (joules), ``<scope>_energy_source``
    (``"prometheus"``), ``<scope>_energy_scope`` (``"query"``: whatever the query measures) and
    ``<scope>_energy_short_task``. Running refreshes (``final=False``) report nothing, so a
    local meter's value shows until the finish. Thread-safe.
    """

    name = "prometheus"

    def __init__(
        self,
        url: str | None,
        queries: Mapping[str, str],
        machine: str | None,
        *,
        timeout_s: float = 2.0,
        retry_after_s: float = 60.0,
        scrape_interval_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        setup_problem: str | None = None,
    ) -> None:
        """Create a meter.

        Args:
            url: Base URL of the Prometheus server (``None``: unavailable).
            queries: Scope (``system``, ``cpu``, ``gpu``) → PromQL format string with
                ``{elapsed}`` (ms) and ``{machine}``; other scopes are ignored.
            machine: Label substituted for ``{machine}``.
            timeout_s: Timeout of each socket operation of a query, in seconds.
            retry_after_s: After a server failure, seconds without queries.
            scrape_interval_s: Scrape interval of the queried series, in seconds (resolution).
            clock: Monotonic clock in seconds (a parameter for tests).
            setup_problem: Why the settings give this meter nothing to query, where they
                intend it to (:func:`tasktrace.meters.prometheus_setup.prometheus_setup_problem`):
                then it is the meter's :attr:`reason`, warned about once even when the meter
                was not asked for by name.
        """
        self.url = url
        self.machine = machine
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.scrape_interval_s = scrape_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._down_until = -math.inf
        self._setup_problem = setup_problem
        self.queries = {k: v for k, v in queries.items() if k in SCOPE_FIELDS}
        for scope in queries.keys() - SCOPE_FIELDS.keys():
            _log.debug("tasktrace: power query scope %r ignored (not in %s)", scope, SCOPE_FIELDS)

    def available(self) -> bool:
        """Return whether an http(s) URL and at least one query are configured (no network)."""
        return bool(self.url and is_http_url(self.url) and self.queries)

    @property
    def reason_is_notable(self) -> bool:
        """Whether :attr:`reason` is warned about unasked: the settings intend this meter."""
        return self._setup_problem is not None

    @property
    def reason(self) -> str | None:
        """Why the meter is unavailable (no URL, or no power queries), else ``None``."""
        if self._setup_problem is not None and not self.available():
            return self._setup_problem
        if not self.url:
            return "no Prometheus URL is set ([prometheus] url, TASKTRACE_PROMETHEUS__URL)"
        if not is_http_url(self.url):
            return (
                f"the Prometheus URL {mask_url(self.url)!r} is not an http:// or https:// URL "
                "([prometheus] url, TASKTRACE_PROMETHEUS__URL)"
            )
        if not self.queries and self.machine is None:
            return f"no machine is selected, so no power query applies ({SELECT_MACHINE_HINT})"
        if not self.queries:
            return f"machine {self.machine!r} has no power_queries ([machines.NAME])"
        return None

    def start(self) -> None:
        """Take no snapshot: the queries cover the task's duration by themselves."""
        return

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> MeterReading:
        """At the finish, run each scope's query over the last ``elapsed_s`` seconds, now.

        Tasks use :meth:`read_final` instead, which evaluates the queries at the task's end.

        Args:
            snapshot: Unused (``None``).
            elapsed_s: The task's duration in seconds; ``{elapsed}`` is it in milliseconds.
            final: Queries run only when ``True``; otherwise nothing is reported.

        Returns:
            The fields above for each configured scope; ``<scope>_power`` is ``None`` where the
            query failed (warned once).
        """
        del snapshot
        if not final or not self.available():
            return {}
        return self._reading(elapsed_s, None)

    def read_final(
        self, snapshot: object, elapsed_s: float, end_time_s: float
    ) -> tuple[MeterReading, LateReading | None]:
        """Return the final reading in two parts (see :func:`tasktrace.meters.base.read_final`).

        Nothing now; the queries are the late part, evaluated at ``end_time_s`` (Prometheus's
        ``time`` parameter), so they give the same values whenever they run.

        Args:
            snapshot: Unused (``None``).
            elapsed_s: The task's duration in seconds; ``{elapsed}`` is it in milliseconds.
            end_time_s: The task's end, Unix seconds (its ``finish_time``).

        Returns:
            ``({}, late)``; ``late`` is ``None`` when the meter is not available.
        """
        del snapshot
        if not self.available():
            return {}, None
        return {}, functools.partial(self._reading, elapsed_s, end_time_s)

    def _reading(self, elapsed_s: float, at: float | None) -> MeterReading:
        assert self.url is not None  # available()
        elapsed_ms = max(1, int(elapsed_s * 1000))  # LensKit's int(duration * 1000)
        short = elapsed_s < self.scrape_interval_s
        values = self._query_all(elapsed_ms, at)
        out: dict[str, object] = {}
        for scope in self.queries:
            value = values.get(scope)
            out[SCOPE_FIELDS[scope]] = value
            out[f"{scope}_energy_source"] = "prometheus" if value is not None else None
            out[f"{scope}_energy_scope"] = "query" if value is not None else None
            out[f"{scope}_energy_short_task"] = short
        return out

    def _query_all(self, elapsed_ms: int, at: float | None) -> dict[str, float | None]:
        """Run every scope's query at once (one round trip for all, not one each).

        The first in this thread, each other in a thread of its own; where no thread can be
        started, in this thread after the first.
        """
        items = list(self.queries.items())
        values: dict[str, float | None] = {}

        def run(scope: str, template: str) -> None:
            values[scope] = self._query(scope, template, elapsed_ms, at)  # one dict store

        threads = []
        for scope, template in items[1:]:
            thread = threading.Thread(target=run, args=(scope, template), daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no new thread now (interpreter shutting down)
                run(scope, template)
            else:
                threads.append(thread)
        if items:
            run(*items[0])
        for thread in threads:
            thread.join()
        return values

    def _query(self, scope: str, template: str, elapsed_ms: int, at: float | None) -> float | None:
        assert self.url is not None
        with self._lock:
            if self._clock() < self._down_until:
                return None
        try:
            query = template.format(elapsed=elapsed_ms, machine=self.machine)
        except (KeyError, IndexError, ValueError) as e:
            _warn(
                f"prometheus-format:{scope}",
                "tasktrace: power query %r for %s is not a valid format string (%r); "
                "only {elapsed} and {machine} are available",
                template,
                scope,
                e,
            )
            return None
        try:
            values = query_prometheus(self.url, query, self.timeout_s, at)
        except PrometheusNoSeries as e:
            window_s = elapsed_ms / 1000
            if window_s < 2 * self.scrape_interval_s:  # the window, not the metric
                _warn(
                    f"prometheus-short:{scope}:{template}",
                    "tasktrace: %s: no series over a %d ms window, %s the scrape interval "
                    "(scrape_interval_s = %gs): increase() needs two samples in its window, "
                    "which %s; the %s energy of such tasks is None",
                    query,
                    elapsed_ms,
                    "shorter than" if window_s < self.scrape_interval_s else "under twice",
                    self.scrape_interval_s,
                    "it never holds" if window_s < self.scrape_interval_s else "it may not hold",
                    scope,
                )
            else:
                _warn(f"prometheus-query:{scope}:{template}", "tasktrace: %s: %s", query, e)
        except PrometheusQueryError as e:
            _warn(f"prometheus-query:{scope}:{template}", "tasktrace: %s: %s", query, e)
        except OSError as e:  # unreachable, refused, timed out, HTTP error
            with self._lock:
                self._down_until = self._clock() + self.retry_after_s
            if not _warn(
                f"prometheus-server:{self.url}",
                "tasktrace: Prometheus at %s failed (%s); energy from it is None "
                "(not retried for %gs; further failures are not reported)",
                mask_url(self.url),
                e,
                self.retry_after_s,
            ):
                _log.debug("tasktrace: Prometheus at %s failed again (%s)", mask_url(self.url), e)
        except ValueError as e:  # not JSON
            _warn(f"prometheus-body:{self.url}", "tasktrace: Prometheus answer is not JSON (%s)", e)
        else:
            if len(values) > 1:
                _warn(
                    f"prometheus-series:{scope}:{template}",
                    "tasktrace: power query %r for %s returned %d series; using the first, as "
                    "LensKit does (wrap the query in sum(...) to add them up)",
                    template,
                    scope,
                    len(values),
                )
            return values[0]
        return None
