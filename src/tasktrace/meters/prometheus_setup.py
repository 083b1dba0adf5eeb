"""Why the settings give the Prometheus meter nothing to query, said once instead of silence.

A LensKit project that defines machines with ``power_queries`` but selects none, selects one
that is not defined or has no queries, or has queries but no Prometheus URL, would otherwise
get ``None`` for every energy field without a word. :func:`prometheus_setup_problem` names the
missing piece and where to set it; the energy meters report it once, when the first task
builds them (:func:`tasktrace.meters.energy.default_energy_meters`).

Settings without any ``[machines.NAME]`` table, or whose machines have no queries and no URL
is set, ask for nothing: a machine label (``TASKTRACE_MACHINE`` used as a plain label) or a
shell-wide ``LK_PROMETHEUS__URL`` alone says nothing.
"""

from __future__ import annotations

from tasktrace.core.redact import mask_url
from tasktrace.core.settings import Settings
from tasktrace.meters.prometheus import SCOPE_FIELDS, SELECT_MACHINE_HINT, is_http_url

__all__ = ["SELECT_MACHINE_HINT", "SET_URL_HINT", "prometheus_setup_problem"]

SET_URL_HINT = "[prometheus] url in lenskit.toml, LK_PROMETHEUS__URL or TASKTRACE_PROMETHEUS__URL"
"""The ways to set the Prometheus URL, as the warnings name them."""


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in sorted(names)) or "none"


def prometheus_setup_problem(settings: Settings) -> str | None:
    """Return why the Prometheus meter has nothing to query, where the settings intend it to.

    Args:
        settings: The process's settings (:attr:`Settings.origins` names where the machine
            label came from, when known).

    Returns:
        ``None`` when the meter can query (a URL, and the selected machine has a query for
        ``system``, ``cpu`` or ``gpu``) or when the settings ask for nothing (see the module
        docstring); otherwise one sentence naming the missing piece
        and how to set it: no machine selected, the selected machine not defined or without
        queries, no URL, or one that is not http(s) (its password and query hidden).
    """
    with_queries = [n for n, m in settings.machines.items() if m.power_queries]
    if not settings.machines or (not with_queries and not settings.prometheus.url):
        return None  # no machine table, or none with queries and no URL: nothing intended
    if settings.machine is None:
        if not with_queries:
            return None
        return (
            f"machines with power_queries are defined ({_names(with_queries)}) but no machine "
            f"is selected; select one with {SELECT_MACHINE_HINT}"
        )
    return _selected_machine_problem(settings, settings.machine, with_queries)


def _selected_machine_problem(settings: Settings, name: str, with_queries: list[str]) -> str | None:
    source = settings.origins.get(("machine",))
    selected = f"machine {name!r}" + (f" (from {source})" if source else "")
    machine = settings.machines.get(name)
    if machine is None:
        return (
            f"{selected} is not defined: no [machines.{name}] table (defined: "
            f"{_names(list(settings.machines))}); select one with {SELECT_MACHINE_HINT}"
        )
    if not set(machine.power_queries) & SCOPE_FIELDS.keys():
        return (
            f"{selected} has no power query for {', '.join(SCOPE_FIELDS)} "
            f"([machines.{name}.power_queries]; machines with queries: {_names(with_queries)})"
        )
    url = settings.prometheus.url
    if not url:
        return f"{selected} has power_queries but no Prometheus URL is set; set {SET_URL_HINT}"
    if not is_http_url(url):
        source = settings.origins.get(("prometheus", "url"))
        return (
            f"{selected} has power_queries but the Prometheus URL {mask_url(url)!r}"
            + (f" (from {source})" if source else "")
            + f" is not an http:// or https:// URL; set {SET_URL_HINT}"
        )
    return None
