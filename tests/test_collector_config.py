"""Consistency checks of collector-config/: pipelines, ports, exposure (docker is not needed)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

CONFIG_DIR = Path(__file__).resolve().parent.parent / "collector-config"
COMPOSE_FILE = CONFIG_DIR / "docker-compose.yaml"
ALL_YAML = sorted(CONFIG_DIR.rglob("*.yaml")) + sorted(CONFIG_DIR.rglob("*.yml"))
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
ANY_HOSTS = {"0.0.0.0", "", "::", "[::]"}  # noqa: S104 - the value under test, not a bind
PIPELINE_KINDS = ("receivers", "processors", "exporters")
_ENV_REF = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _expand(value: str) -> str:
    """Replace collector ``${env:NAME:-default}`` references by their default."""
    return _ENV_REF.sub(lambda match: match.group(2) or "", value)


def _is_collector_config(document: Any) -> bool:
    return isinstance(document, dict) and "pipelines" in (document.get("service") or {})


COLLECTOR_FILES = [path for path in ALL_YAML if _is_collector_config(_load(path))]


def _split_host_port(address: str) -> tuple[str, int]:
    host, _, port = _expand(address).rpartition(":")
    return host, int(port)


def _endpoints(node: Any) -> list[str]:
    """Every ``endpoint`` string anywhere below ``node``."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "endpoint" and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_endpoints(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_endpoints(item))
    return found


def _collector_listeners(config: dict[str, Any]) -> dict[int, str]:
    """Port -> bind host of every receiver and extension listener of a collector config."""
    listeners: dict[int, str] = {}
    for section in ("receivers", "extensions"):
        for endpoint in _endpoints(config.get(section) or {}):
            host, port = _split_host_port(endpoint)
            listeners[port] = host
    return listeners


def _tempo_listeners(config: dict[str, Any]) -> dict[int, str]:
    server = config.get("server") or {}
    listeners = {
        int(server.get("http_listen_port", 80)): server.get("http_listen_address", ""),
        int(server.get("grpc_listen_port", 9095)): server.get("grpc_listen_address", ""),
    }
    for endpoint in _endpoints(config.get("distributor") or {}):
        host, port = _split_host_port(endpoint)
        listeners[port] = host
    return listeners


def _compose() -> dict[str, Any]:
    return _load(COMPOSE_FILE)


def _mounted_files(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of each bind-mounted file or folder of a compose service."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = (CONFIG_DIR / source).resolve()
    return mounts


def _service_config_files(service: dict[str, Any]) -> list[Path]:
    """Host paths of the config files a compose service is started with."""
    mounts = _mounted_files(service)
    files: list[Path] = []
    for argument in service.get("command", []):
        match = re.fullmatch(r"-{1,2}config(?:\.file)?=(.+)", argument)
        if match:
            files.append(mounts[match.group(1)])
    return files


def _service_listeners(service: dict[str, Any]) -> dict[int, str]:
    """Port -> bind host of everything a compose service listens on, from its own config."""
    if "GF_SERVER_HTTP_PORT" in service.get("environment", {}):
        return {int(service["environment"]["GF_SERVER_HTTP_PORT"]): "0.0.0.0"}  # noqa: S104
    listeners: dict[int, str] = {}
    for path in _service_config_files(service):
        config = _load(path)
        if _is_collector_config(config):
            listeners.update(_collector_listeners(config))
        elif "server" in config or "distributor" in config:
            listeners.update(_tempo_listeners(config))
    for argument in service.get("command", []):  # Prometheus: --web.listen-address=HOST:PORT
        match = re.fullmatch(r"--web\.listen-address=(.+)", str(argument))
        if match:
            host, port = _split_host_port(match.group(1))
            listeners[port] = host
    return listeners


def _published_ports(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port of a compose service."""
    published: list[tuple[str, int, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published.append(
                (entry.get("host_ip", ""), int(entry["published"]), int(entry["target"]))
            )
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 3:
            published.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            published.append(("", int(parts[0]), int(parts[1])))
        else:
            published.append(("", int(parts[0]), int(parts[0])))
    return published


# --------------------------------------------------------------------------- every file


def test_every_yaml_file_loads() -> None:
    """Every YAML file under collector-config/ parses to a mapping, and the key files exist."""
    names = {path.relative_to(CONFIG_DIR).as_posix() for path in ALL_YAML}
    assert {
        "docker-compose.yaml",
        "otel-collector-jaeger.yaml",
        "otel-collector-tempo.yaml",
        "otel-collector-offline.yaml",
        "tempo.yaml",
        "grafana/provisioning/datasources/tempo.yaml",
    } <= names
    for path in ALL_YAML:
        assert isinstance(_load(path), dict), path


def test_every_yaml_file_is_commented() -> None:
    """Each configuration file explains itself in comments."""
    for path in ALL_YAML:
        comment_lines = [
            line for line in path.read_text().splitlines() if line.lstrip().startswith("#")
        ]
        assert len(comment_lines) >= 2, path


@pytest.mark.parametrize("path", COLLECTOR_FILES, ids=lambda path: path.name)
def test_pipelines_name_only_components_defined_in_the_same_file(path: Path) -> None:
    """Each pipeline names only receivers, processors and exporters defined in its file."""
    config = _load(path)
    pipelines = config["service"]["pipelines"]
    assert pipelines, path
    for name, pipeline in pipelines.items():
        assert pipeline.get("receivers"), f"{path.name}: {name} has no receivers"
        assert pipeline.get("exporters"), f"{path.name}: {name} has no exporters"
        for kind in PIPELINE_KINDS:
            defined = set(config.get(kind) or {})
            for component in pipeline.get(kind) or []:
                assert component in defined, f"{path.name}: {name} names undefined {component}"


@pytest.mark.parametrize("path", COLLECTOR_FILES, ids=lambda path: path.name)
def test_every_defined_component_is_used(path: Path) -> None:
    """No receiver, processor, exporter or extension is defined and then left unused."""
    config = _load(path)
    service = config["service"]
    for kind in PIPELINE_KINDS:
        used = {c for pipeline in service["pipelines"].values() for c in pipeline.get(kind) or []}
        assert set(config.get(kind) or {}) == used, f"{path.name}: unused {kind}"
    assert set(config.get("extensions") or {}) == set(service.get("extensions") or [])


@pytest.mark.parametrize("path", COLLECTOR_FILES, ids=lambda path: path.name)
def test_service_extensions_and_authenticators_are_defined(path: Path) -> None:
    """service.extensions and every auth.authenticator name an extension defined in the file."""
    config = _load(path)
    extensions = set(config.get("extensions") or {})
    enabled = set(config["service"].get("extensions") or [])
    assert enabled <= extensions, path.name
    for section in ("receivers", "exporters"):
        for component in (config.get(section) or {}).values():
            text = yaml.safe_dump(component)
            for authenticator in re.findall(r"authenticator: (\S+)", text):
                assert authenticator in enabled, f"{path.name}: {authenticator} not enabled"


def test_jaeger_storage_names_agree() -> None:
    """The Jaeger exporter and query extension use a storage backend that jaeger.yaml defines."""
    config = _load(CONFIG_DIR / "jaeger.yaml")
    backends = set(config["extensions"]["jaeger_storage"]["backends"])
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] in backends
    assert config["extensions"]["jaeger_query"]["storage"]["traces"] in backends


# --------------------------------------------------------------------------- compose


def test_compose_services_mount_existing_config_files() -> None:
    """Every file a compose service mounts exists, and each --config points at a mount."""
    for name, service in _compose()["services"].items():
        for container_path, host_path in _mounted_files(service).items():
            if PurePosixPath(container_path).suffix in {".yaml", ".yml"}:
                assert host_path.is_file(), f"{name}: {host_path} missing"
        for path in _service_config_files(service):
            assert path.is_file(), f"{name}: {path}"


def test_compose_publishes_ports_on_loopback_only() -> None:
    """Every host port in the default compose file is bound to 127.0.0.1."""
    published = [
        (name, entry)
        for name, service in _compose()["services"].items()
        for entry in _published_ports(service)
    ]
    assert published
    for name, (host_ip, _, _) in published:
        assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip or 'all interfaces'}"


def test_published_ports_reach_a_listener_on_all_container_interfaces() -> None:
    """Each published port maps to a port the service's own config listens on at 0.0.0.0."""
    for name, service in _compose()["services"].items():
        listeners = _service_listeners(service)
        for _, host_port, container_port in _published_ports(service):
            assert container_port in listeners, f"{name}: nothing listens on {container_port}"
            assert listeners[container_port] in ANY_HOSTS, (
                f"{name}:{container_port} binds {listeners[container_port]}, "
                f"unreachable through host port {host_port}"
            )


def test_cross_container_endpoints_reach_a_listener() -> None:
    """Exporters and the Grafana data source point at a service port bound to 0.0.0.0."""
    services = _compose()["services"]
    targets: list[tuple[str, str]] = []
    for name, service in services.items():
        for path in _service_config_files(service):
            config = _load(path)
            if _is_collector_config(config):
                targets += [(name, e) for e in _endpoints(config.get("exporters") or {})]
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_ENDPOINT"):
                targets.append((name, value))
    for path in sorted((CONFIG_DIR / "grafana/provisioning/datasources").glob("*.yaml")):
        targets += [("grafana", source["url"]) for source in _load(path)["datasources"]]
    assert targets
    for client, target in targets:
        host, port = _split_host_port(_expand(target).split("://")[-1].split("/")[0])
        assert host in services, f"{client} -> {target}: no such compose service"
        listeners = _service_listeners(services[host])
        assert listeners.get(port) in ANY_HOSTS, f"{client} -> {target}: not listening"


def test_merged_collector_configs_do_not_override_each_other() -> None:
    """Files merged into one collector have distinct pipelines and identical shared parts."""
    for name, service in _compose()["services"].items():
        configs = [_load(path) for path in _service_config_files(service)]
        if len(configs) < 2:
            continue
        pipeline_names = [p for config in configs for p in config["service"]["pipelines"]]
        assert len(pipeline_names) == len(set(pipeline_names)), name
        for section in (*PIPELINE_KINDS, "extensions"):
            seen: dict[str, Any] = {}
            for config in configs:
                for component, settings in (config.get(section) or {}).items():
                    assert seen.setdefault(component, settings) == settings, (
                        f"{name}: {section}.{component} differs between merged files"
                    )
        service_extensions = {tuple(c["service"].get("extensions") or []) for c in configs}
        assert len(service_extensions) == 1, f"{name}: service.extensions lists differ"


def test_compose_images_are_pinned() -> None:
    """Every compose image carries an explicit version tag (no implicit or 'latest' tag)."""
    for name, service in _compose()["services"].items():
        image = service["image"]
        tag = image.rpartition(":")[2] if ":" in image else ""
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image}"  # prom/ uses v3.5.0


# --------------------------------------------------------------------------- exposure


def test_collector_configs_bind_beyond_loopback_only_in_containers_or_with_auth() -> None:
    """A receiver on a non-loopback address is either in a compose-run file or needs TLS+auth."""
    compose_files = {
        path
        for service in _compose()["services"].values()
        for path in _service_config_files(service)
    }
    for path in COLLECTOR_FILES:
        config = _load(path)
        shared = "shared" in path.name
        for receiver_name, receiver in (config.get("receivers") or {}).items():
            protocols = receiver.get("protocols") or {"": receiver}
            for protocol_name, protocol in protocols.items():
                if not isinstance(protocol, dict) or "endpoint" not in protocol:
                    continue
                host, _ = _split_host_port(protocol["endpoint"])
                if host in LOOPBACK_HOSTS:
                    continue
                where = f"{path.name}: {receiver_name} {protocol_name}"
                if shared:
                    assert (protocol.get("auth") or {}).get("authenticator"), f"{where}: no auth"
                    tls = protocol.get("tls") or {}
                    assert tls.get("cert_file"), f"{where}: no TLS certificate"
                    assert tls.get("key_file"), f"{where}: no TLS key"
                else:
                    assert path.resolve() in compose_files, f"{where}: not loopback, no auth"


def test_shared_collector_config_exists_and_requires_auth() -> None:
    """The shared-collector variant exists and enables bearertokenauth."""
    config = _load(CONFIG_DIR / "otel-collector-shared.yaml")
    assert "bearertokenauth" in config["service"]["extensions"]
    assert "bearertokenauth" in config["extensions"]
