"""Static checks of the files in collector/: what can be validated without Docker.

    python collector/check.py        # prints one line per problem; exit status 1 if there is any

A platform team that edits these files runs it before deploying; tests/test_collector_config.py runs every
check on the shipped files and on broken copies of them. It checks:

* pipelines: every component a pipeline names is declared, every declared component is used, extensions are
  enabled, connectors join two pipelines (`pipeline_errors`);
* component types: each is a type of the contrib distribution (components.yaml) or of Jaeger v2 (`type_errors`);
* delivery: decision spans meet no sampler or in-memory batch, their exporters queue on disk and retry forever,
  memory_limiter comes first, a tail sampler keeps every trace with a model version (`delivery_errors`);
* privacy: the PII processor keeps exactly the span attributes of otel_rai/semconv.py, and deletes the trace-UI
  input where it repeats allowlisted raw values (`allowlist_errors`);
* Jaeger: persistent Badger, at least six months of retention, explicit listen addresses (`jaeger_errors`);
* ClickHouse: the exporter writes into the schema of collector/clickhouse/ (its own schema creation off, same
  database and table), whose files are current and keep every table six months (`clickhouse_errors`);
* ports: what each file sends to, scrapes or publishes is what the other files listen on, and the port table of
  docs/deploy.md lists exactly the published ports (`port_errors`).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from otel_rai import semconv  # noqa: E402
from otel_rai.clickhouse import schema as clickhouse_schema  # noqa: E402

KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")
#: Processors that acknowledge data before it is exported: decision spans must not pass through them.
ASYNC_PROCESSORS = ("batch", "tail_sampling", "groupbytrace")
#: The EU AI Act's "at least six months", as the longest six calendar months.
SIX_MONTHS_HOURS = 184 * 24
#: Default listen ports of servers whose config does not name one.
DEFAULT_PROMETHEUS_PORT = 9090

_SCOPE_IS = f'instrumentation_scope.name == "{semconv.SCOPE}"'


@dataclass
class Stack:
    """The parsed files of collector/ and the text of the deployment guide."""

    collector: dict
    jaeger: dict
    prometheus: dict
    compose: dict
    components: dict
    deploy_doc: str
    clickhouse_sql: dict[str, str]


def load(root: Path = ROOT) -> Stack:
    def read(path: str) -> Any:
        return yaml.safe_load((root / path).read_text())

    return Stack(
        collector=read("collector/otelcol.yaml"),
        jaeger=read("collector/jaeger.yaml"),
        prometheus=read("collector/prometheus/prometheus.yml"),
        compose=read("collector/compose.yaml"),
        components=read("collector/components.yaml"),
        deploy_doc=(root / "docs/deploy.md").read_text(),
        clickhouse_sql={name: (root / "collector/clickhouse" / name).read_text()
                        for name in clickhouse_schema.FILES if (root / "collector/clickhouse" / name).exists()},
    )


def component_type(component_id: str) -> str:
    """``tail_sampling`` of ``tail_sampling/audit``."""
    return component_id.split("/", 1)[0]


def _declared(config: dict, kind: str) -> dict:
    return config.get(kind) or {}


def _pipelines(config: dict) -> dict[str, dict]:
    return (config.get("service") or {}).get("pipelines") or {}


def pipeline_errors(config: dict, name: str) -> list[str]:
    """Pipelines name only declared components; every declared component is used."""
    errors = []
    pipelines = _pipelines(config)
    if not pipelines:
        return [f"{name}: no service.pipelines"]
    connectors = _declared(config, "connectors")
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    connector_ends: dict[str, set[str]] = {c: set() for c in connectors}
    for pipeline_id, pipeline in pipelines.items():
        if component_type(pipeline_id) not in ("traces", "metrics", "logs", "profiles"):
            errors.append(f"{name}: pipeline {pipeline_id!r} is not named after a signal")
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            errors.append(f"{name}: pipeline {pipeline_id!r} needs receivers and exporters")
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind) or []:
                if kind != "processors" and component in connectors:
                    connector_ends[component].add(kind)
                    used["connectors"].add(component)
                elif component in _declared(config, kind):
                    used[kind].add(component)
                else:
                    errors.append(f"{name}: pipeline {pipeline_id!r} uses {kind[:-1]} {component!r}, not declared")
    enabled = (config.get("service") or {}).get("extensions") or []
    for extension in enabled:
        if extension not in _declared(config, "extensions"):
            errors.append(f"{name}: service.extensions enables {extension!r}, not declared")
    used["extensions"] = set(enabled)
    for kind in KINDS:
        for component in _declared(config, kind):
            if component not in used[kind]:
                errors.append(f"{name}: {kind[:-1]} {component!r} is declared but not used")
    for connector, ends in connector_ends.items():
        if ends and ends != {"receivers", "exporters"}:
            errors.append(f"{name}: connector {connector!r} must be an exporter of one pipeline and a receiver "
                          "of another")
    return errors


def _module_names(modules: list[str], kind: str) -> set[str]:
    suffix = kind[:-1]  # "processors" -> "processor"
    names = set()
    for module in modules:
        last = module.rsplit("/", 1)[-1]
        names.add(last[: -len(suffix)] if last.endswith(suffix) and last != suffix else last)
    return names


def type_errors(config: dict, name: str, components: dict, *, jaeger: bool = False) -> list[str]:
    """Every declared component's type exists in the distribution (see collector/components.yaml)."""
    errors = []
    for kind in KINDS:
        if jaeger:
            known = set(components["jaeger"][kind])
            accepted = known.__contains__
        else:
            verified = set(components["verified"][kind])
            modules = _module_names(components["modules"][kind], kind)
            accepted = lambda t, v=verified, m=modules: t in v or t.replace("_", "") in m  # noqa: E731
        for component in _declared(config, kind):
            if not accepted(component_type(component)):
                errors.append(f"{name}: {kind[:-1]} type {component_type(component)!r} is not a known component")
    return errors


def _drops_decisions(config: dict, processor: str) -> bool:
    """Whether `processor` is a filter that drops every span of the otel_rai scope."""
    spans = ((_declared(config, "processors").get(processor) or {}).get("traces") or {}).get("span") or []
    return component_type(processor) == "filter" and _SCOPE_IS in spans


def _is_pii_processor(config: dict, processor: str) -> bool:
    return component_type(processor) == "transform" and _allowlist_pattern(config, processor) is not None


def delivery_errors(config: dict, name: str) -> list[str]:
    """Decision spans reach an exporter synchronously, redacted, and that exporter never gives up."""
    errors = []
    processors = _declared(config, "processors")
    extensions = (config.get("service") or {}).get("extensions") or []
    audit_pipelines = 0
    for pipeline_id, pipeline in _pipelines(config).items():
        chain = pipeline.get("processors") or []
        limiters = [p for p in chain if component_type(p) == "memory_limiter"]
        if not limiters or chain[0] != limiters[0]:
            errors.append(f"{name}: pipeline {pipeline_id!r} must start with memory_limiter")
        if not pipeline_id.startswith("traces"):
            continue
        if any(_drops_decisions(config, p) for p in chain):
            continue  # decision spans leave this pipeline before its exporters, whatever held them before
        for processor in chain:
            if component_type(processor) in ASYNC_PROCESSORS:
                errors.append(
                    f"{name}: pipeline {pipeline_id!r} exports decision spans after {processor!r}, which "
                    "acknowledges them before export; route them through a pipeline without it"
                )
        audit_pipelines += 1
        if not any(_is_pii_processor(config, p) for p in chain):
            errors.append(f"{name}: pipeline {pipeline_id!r} carries decision spans without the PII processor")
        for exporter in pipeline.get("exporters") or []:
            errors.extend(_exporter_delivery_errors(config, name, exporter, extensions))
    if audit_pipelines == 0:
        errors.append(f"{name}: no traces pipeline carries decision spans (scope {semconv.SCOPE!r})")
    for processor_id, processor in processors.items():
        if component_type(processor_id) == "tail_sampling" and not _keeps_model_versions(processor):
            errors.append(f"{name}: {processor_id!r} has no policy that always keeps spans with "
                          f"{semconv.MODEL_VERSION}")
    return errors


def _exporter_delivery_errors(config: dict, name: str, exporter: str, extensions: list[str]) -> list[str]:
    settings = _declared(config, "exporters").get(exporter) or {}
    queue = settings.get("sending_queue") or {}
    retry = settings.get("retry_on_failure") or {}
    errors = []
    storage = queue.get("storage")
    if queue.get("enabled") is False or not storage:
        errors.append(f"{name}: exporter {exporter!r} of decision spans needs sending_queue.storage (a disk queue)")
    elif component_type(storage) != "file_storage" or storage not in extensions:
        errors.append(f"{name}: exporter {exporter!r} queues on {storage!r}, which is not an enabled file_storage")
    if retry.get("enabled") is False or str(retry.get("max_elapsed_time")) not in ("0", "0s"):
        errors.append(f"{name}: exporter {exporter!r} must retry forever (retry_on_failure.max_elapsed_time: 0)")
    if queue.get("block_on_overflow") is not True:
        errors.append(f"{name}: exporter {exporter!r} should hold, not reject, data when its queue is full")
    return errors


def _keeps_model_versions(tail_sampling: dict) -> bool:
    for policy in tail_sampling.get("policies") or []:
        if policy.get("type") == "ottl_condition":
            spans = (policy.get("ottl_condition") or {}).get("span") or []
            if f'attributes["{semconv.MODEL_VERSION}"] != nil' in spans:
                return True
        if policy.get("type") == "string_attribute":
            rule = policy.get("string_attribute") or {}
            if rule.get("key") == semconv.MODEL_VERSION and rule.get("enabled_regex_matching"):
                return True
    return False


_KEEP = re.compile(r'^keep_matching_keys\(attributes, "(?P<pattern>.*)"\)$')


def _scoped_statements(config: dict, processor: str, context: str) -> Iterator[str]:
    """Statements of `processor` that apply to the otel_rai scope only, in OTTL context `context`."""
    for group in (_declared(config, "processors").get(processor) or {}).get("trace_statements") or []:
        if isinstance(group, dict) and group.get("context") == context and group.get("conditions") == [_SCOPE_IS]:
            yield from group.get("statements") or []


def _allowlist_pattern(config: dict, processor: str) -> str | None:
    for statement in _scoped_statements(config, processor, "span"):
        match = _KEEP.match(statement)
        if match:
            return match["pattern"]
    return None


def allowed_names(pattern: str) -> tuple[set[str], set[str]]:
    """(exact names, prefixes) of an allowlist ``^(?:a[.]b|c[.]d[.].+)$``."""
    if not (pattern.startswith("^(?:") and pattern.endswith(")$")):
        raise ValueError(f"allowlist pattern must look like ^(?:name|name|prefix.+)$, got {pattern!r}")
    exact, prefixes = set(), set()
    for alternative in pattern[4:-2].split("|"):
        literal = alternative.replace("[.]", ".")
        if literal.endswith(".+"):
            prefixes.add(literal[:-2])
        else:
            exact.add(literal)
    return exact, prefixes


def allowlist_errors(config: dict, name: str) -> list[str]:
    """The PII processor keeps exactly what docs/semantic-conventions.md documents, nothing else."""
    patterns = [
        (p, _allowlist_pattern(config, p)) for p in _declared(config, "processors") if component_type(p) == "transform"
    ]
    patterns = [(p, pattern) for p, pattern in patterns if pattern is not None]
    if len(patterns) != 1:
        return [f"{name}: expected one transform processor with keep_matching_keys for scope {semconv.SCOPE!r}, "
                f"found {len(patterns)}"]
    processor, pattern = patterns[0]
    errors = []
    if (_declared(config, "processors")[processor] or {}).get("error_mode") != "propagate":
        errors.append(f"{name}: {processor!r} must use error_mode: propagate (fail closed, never forward unredacted)")
    try:
        exact, prefixes = allowed_names(pattern)
    except ValueError as exc:
        return errors + [f"{name}: {processor!r}: {exc}"]
    documented = set(semconv.SPAN_ATTRIBUTES)
    for missing in sorted(documented - exact):
        errors.append(f"{name}: {processor!r} deletes {missing!r}, defined in otel_rai/semconv.py: add it")
    for extra in sorted(exact - documented):
        errors.append(f"{name}: {processor!r} keeps {extra!r}, which otel_rai/semconv.py does not define")
    if prefixes != {semconv.OUTPUT_SCORES_PREFIX}:
        errors.append(
            f"{name}: {processor!r} keeps prefixes {sorted(prefixes)}; expected only {semconv.OUTPUT_SCORES_PREFIX!r}"
            f" (raw values {semconv.INPUT_VALUE_PREFIX}* stay deleted unless a feature is named explicitly)"
        )
    if semconv.UI_INPUT_VALUE in exact and not any(
        s.startswith(f'delete_key(attributes, "{semconv.UI_INPUT_VALUE}") where IsMatch(') and
        semconv.UI_ALLOWLISTED_KEY in s for s in _scoped_statements(config, processor, "span")
    ):
        errors.append(f"{name}: {processor!r} keeps {semconv.UI_INPUT_VALUE!r} without deleting it where it repeats "
                      f"allowlisted raw values ({semconv.UI_ALLOWLISTED_KEY!r})")
    events = list(_scoped_statements(config, processor, "spanevent"))
    if not any(s.startswith("keep_keys(attributes, ") and "exception.stacktrace" not in s for s in events):
        errors.append(f"{name}: {processor!r} must keep_keys on span events without exception.stacktrace")
    return errors


def _hours(duration: str) -> float:
    units = {"h": 1.0, "m": 1 / 60, "s": 1 / 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration):
        raise ValueError(f"cannot read duration {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


def jaeger_errors(config: dict, name: str) -> list[str]:
    """Persistent Badger with six months of retention, and every server on an explicit address."""
    errors = []
    backends = ((_declared(config, "extensions").get("jaeger_storage") or {}).get("backends")) or {}
    badgers = {n: b["badger"] for n, b in backends.items() if isinstance(b, dict) and "badger" in b}
    if not badgers:
        errors.append(f"{name}: no badger backend in jaeger_storage")
    for backend, badger in badgers.items():
        if badger.get("ephemeral") is not False:
            errors.append(f"{name}: badger backend {backend!r} must set ephemeral: false (persistent)")
        if not (badger.get("directories") or {}).get("keys") or not (badger.get("directories") or {}).get("values"):
            errors.append(f"{name}: badger backend {backend!r} needs directories.keys and directories.values")
        try:
            if _hours((badger.get("ttl") or {}).get("spans", "72h")) < SIX_MONTHS_HOURS:
                errors.append(f"{name}: badger backend {backend!r} keeps spans less than six months "
                              f"({SIX_MONTHS_HOURS}h)")
        except ValueError as exc:
            errors.append(f"{name}: badger backend {backend!r}: {exc}")
    for where, server in _servers(config):
        if not server.get("endpoint"):
            errors.append(f"{name}: {where} has no explicit endpoint")
    return errors


_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\S+?)(?: ON CLUSTER \S+)? \((?P<body>.*?)\n\)\nENGINE = (?P<engine>\S+)"
                    r"(?P<tail>.*?);\n", re.DOTALL)
_TTL_DAYS = re.compile(r"^TTL .*toIntervalDay\((\d+)\)$", re.MULTILINE)


def clickhouse_errors(stack: Stack) -> list[str]:
    """The ClickHouse exporter writes into the schema of collector/clickhouse/, which is current and keeps
    six months everywhere."""
    errors = []
    expected = clickhouse_schema.files()
    for name in expected:
        if name not in stack.clickhouse_sql:
            errors.append(f"clickhouse/{name}: missing; run python -m otel_rai.clickhouse.schema collector/clickhouse")
        elif stack.clickhouse_sql[name] != expected[name]:
            errors.append(f"clickhouse/{name}: not what otel_rai/clickhouse/schema.py renders; run "
                          "python -m otel_rai.clickhouse.schema collector/clickhouse")
    for name, text in stack.clickhouse_sql.items():
        for table in _TABLE.finditer(text):
            days = _TTL_DAYS.findall(table["tail"])
            if "TTL" in table["tail"] and not days:
                errors.append(f"clickhouse/{name}: table {table[1]} has a TTL this check cannot read")
            elif days and int(days[0]) * 24 < SIX_MONTHS_HOURS:  # no TTL: rows are kept (model records)
                errors.append(f"clickhouse/{name}: table {table[1]} keeps rows less than six months "
                              f"(TTL {days[0]} days)")
    traces = stack.clickhouse_sql.get("otel_traces.sql", "")
    services = stack.compose.get("services") or {}
    for exporter_id, exporter in _declared(stack.collector, "exporters").items():
        if component_type(exporter_id) != "clickhouse":
            continue
        exporter = exporter or {}
        if exporter.get("create_schema") is not False:
            errors.append(f"otelcol.yaml: exporter {exporter_id} must not create its schema (create_schema: false): "
                          "otel-rai's lookup views (collector/clickhouse/otel_rai.sql) must exist before spans arrive")
        table = f"{exporter.get('database', 'default')}.{exporter.get('traces_table_name', 'otel_traces')}"
        if f"CREATE TABLE IF NOT EXISTS {table} (" not in traces:
            errors.append(f"otelcol.yaml: exporter {exporter_id} writes into {table}, which "
                          "collector/clickhouse/otel_traces.sql does not create")
        host = _host(str(exporter.get("endpoint", ""))).split("?")[0]
        if host not in services:
            errors.append(f"otelcol.yaml: exporter {exporter_id} sends to {host!r}, which is no service of compose.yaml")
        else:
            mounted = " ".join(str(v) for v in services[host].get("volumes") or [])
            for sql in ("otel_traces.sql", "otel_rai.sql"):
                if f"clickhouse/{sql}:/docker-entrypoint-initdb.d/" not in mounted:
                    errors.append(f"compose.yaml: {host} does not run clickhouse/{sql} at its first start")
    return errors


def _servers(config: dict) -> Iterator[tuple[str, dict]]:
    """(where, settings) of every server block of a collector-style config."""
    for receiver_id, receiver in _declared(config, "receivers").items():
        for protocol, settings in ((receiver or {}).get("protocols") or {}).items():
            yield f"receiver {receiver_id} {protocol}", settings or {}
    for extension_id, extension in _declared(config, "extensions").items():
        extension = extension or {}
        if "endpoint" in extension:
            yield f"extension {extension_id}", extension
        for protocol in ("http", "grpc"):
            if isinstance(extension.get(protocol), dict):
                yield f"extension {extension_id} {protocol}", extension[protocol]
    for exporter_id, exporter in _declared(config, "exporters").items():
        if component_type(exporter_id) == "prometheus":
            yield f"exporter {exporter_id}", exporter or {}


def _port(endpoint: str) -> int:
    """The port of ``host:port``, ``[::]:port`` or ``scheme://host:port/path``."""
    match = re.search(r":(\d+)(?:/.*)?$", str(endpoint))
    if not match:
        raise ValueError(f"no port in {endpoint!r}")
    return int(match[1])


def _host(endpoint: str) -> str:
    return re.sub(r"^\w+://", "", str(endpoint)).rsplit(":", 1)[0]


def listening_ports(config: dict) -> set[int]:
    """Every port a collector-style config listens on, its own telemetry included."""
    ports = {_port(settings["endpoint"]) for _, settings in _servers(config) if settings.get("endpoint")}
    readers = (((config.get("service") or {}).get("telemetry") or {}).get("metrics") or {}).get("readers") or []
    for reader in readers:
        exporter = ((reader.get("pull") or {}).get("exporter") or {}).get("prometheus") or {}
        if "port" in exporter:
            ports.add(int(exporter["port"]))
    return ports


def _prometheus_port(service: dict) -> int:
    for arg in service.get("command") or []:
        if str(arg).startswith("--web.listen-address="):
            return _port(arg.split("=", 1)[1])
    return DEFAULT_PROMETHEUS_PORT


def _published(service: dict) -> list[tuple[int, int]]:
    """(host port, container port) of a compose service's ``ports``."""
    pairs = []
    for mapping in service.get("ports") or []:
        *host, container = str(mapping).split(":")
        pairs.append((int(host[-1]) if host else int(container), int(container)))
    return pairs


def _doc_ports(text: str) -> set[tuple[int, str]]:
    """(port, service) rows of the deployment guide's port tables: ``| 4317 | otelcol | ... |``."""
    return {(int(m[1]), m[2]) for m in re.finditer(r"^\| (\d+) \| `?([\w-]+)`? \|", text, re.MULTILINE)}


def port_errors(stack: Stack) -> list[str]:
    """What is sent to, scraped or published is what the receiving side listens on, and the docs agree."""
    errors = []
    services = stack.compose.get("services") or {}
    listens = {
        "otelcol": listening_ports(stack.collector),
        "jaeger": listening_ports(stack.jaeger),
        "prometheus": {_prometheus_port(services.get("prometheus") or {})},
    }
    for service in listens:
        if service not in services:
            errors.append(f"compose.yaml: no service {service!r}")
    for service_name, service in services.items():
        for _host_port, container_port in _published(service):
            if service_name in listens and container_port not in listens[service_name]:
                errors.append(f"compose.yaml: {service_name} publishes {container_port}, where nothing listens")
    for exporter_id, exporter in _declared(stack.collector, "exporters").items():
        endpoint = (exporter or {}).get("endpoint")
        if component_type(exporter_id) in ("otlp", "otlphttp") and endpoint:
            host, port = _host(endpoint), _port(endpoint)
            if host not in listens or port not in listens[host]:
                errors.append(f"otelcol.yaml: exporter {exporter_id} sends to {endpoint}, where nothing listens")
    for job in stack.prometheus.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                host, port = _host(target), _port(target)
                if host not in listens or port not in listens[host]:
                    errors.append(f"prometheus.yml: job {job.get('job_name')} scrapes {target}, where nothing listens")
    published = {(host, name) for name, s in services.items() for host, _ in _published(s)}
    documented = _doc_ports(stack.deploy_doc)
    for port, service in sorted(published - documented):
        errors.append(f"docs/deploy.md: the port table does not list {port} ({service}), published in compose.yaml")
    for port, service in sorted(documented - published):
        errors.append(f"docs/deploy.md: the port table lists {port} ({service}), which compose.yaml does not publish")
    return errors


def check(stack: Stack) -> list[str]:
    """Every problem found in `stack`; empty when it is consistent."""
    return [
        *pipeline_errors(stack.collector, "otelcol.yaml"),
        *type_errors(stack.collector, "otelcol.yaml", stack.components),
        *delivery_errors(stack.collector, "otelcol.yaml"),
        *allowlist_errors(stack.collector, "otelcol.yaml"),
        *pipeline_errors(stack.jaeger, "jaeger.yaml"),
        *type_errors(stack.jaeger, "jaeger.yaml", stack.components, jaeger=True),
        *jaeger_errors(stack.jaeger, "jaeger.yaml"),
        *clickhouse_errors(stack),
        *port_errors(stack),
    ]


def main() -> int:
    problems = check(load())
    for problem in problems:
        print(problem)
    print(f"collector/: {len(problems)} problem(s)" if problems else "collector/: consistent")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
