"""The collector/ stack, validated without Docker: the shipped files pass every check of collector/check.py,
and each check fails on a copy of the files broken the way it is meant to catch."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from opentelemetry.semconv.trace import SpanAttributes

from otel_rai import semconv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "collector"))
import check  # noqa: E402


@pytest.fixture(scope="module")
def shipped() -> check.Stack:
    return check.load(ROOT)


@pytest.fixture
def stack(shipped) -> check.Stack:
    """A private copy to break."""
    return copy.deepcopy(shipped)


def problems_with(stack: check.Stack, fragment: str) -> list[str]:
    return [p for p in check.check(stack) if fragment in p]


# --- the shipped files -------------------------------------------------------------------------------


def test_every_file_is_well_formed_yaml():
    for path in ("otelcol.yaml", "jaeger.yaml", "compose.yaml", "components.yaml", "prometheus/prometheus.yml"):
        assert isinstance(yaml.safe_load((ROOT / "collector" / path).read_text()), dict), path


def test_shipped_stack_has_no_problem(shipped):
    assert check.check(shipped) == []


def test_check_script_exits_zero_on_the_shipped_files():
    run = subprocess.run([sys.executable, str(ROOT / "collector/check.py")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "consistent" in run.stdout


@pytest.mark.usefixtures("prometheus_installed")
def test_promtool_accepts_the_prometheus_config():
    run = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=ROOT / "collector/prometheus",
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_pii_pattern_keeps_exactly_the_documented_attributes(shipped):
    pattern = re.compile(check._allowlist_pattern(shipped.collector, "transform/pii"))
    for name in semconv.SPAN_ATTRIBUTES:
        assert pattern.fullmatch(name), name
    assert pattern.fullmatch(semconv.OUTPUT_SCORES_PREFIX + "approve")
    for name in (semconv.INPUT_VALUE_PREFIX + "income", "user.email", "ml.model.version.x", "xml.model.name",
                 semconv.OUTPUT_SCORES_PREFIX, "ml.fairness.group"):
        assert not pattern.fullmatch(name), name


def test_span_events_keep_type_and_message_but_not_the_stacktrace(shipped):
    (statement,) = check._scoped_statements(shipped.collector, "transform/pii", "spanevent")
    kept = set(re.findall(r'"([^"]+)"', statement))
    assert {SpanAttributes.EXCEPTION_TYPE, SpanAttributes.EXCEPTION_MESSAGE} <= kept
    assert SpanAttributes.EXCEPTION_STACKTRACE not in kept


def test_component_list_records_its_source_and_covers_the_distribution(shipped):
    text = (ROOT / "collector/components.yaml").read_text()
    assert "distributions/otelcol-contrib/manifest.yaml" in text and "008cde8ca78cc0286ee3f0de92fa95e1641a445a" in text
    modules = shipped.components["modules"]
    assert {kind: len(modules[kind]) > 10 for kind in ("receivers", "processors", "exporters", "extensions")} == {
        "receivers": True, "processors": True, "exporters": True, "extensions": True}


def test_verified_types_follow_the_module_naming_rule(shipped):
    """The checker's fallback rule (type without underscores = module name without suffix) holds for every type
    looked up in a metadata.yaml, so the rule is tested on real data."""
    for kind, types in shipped.components["verified"].items():
        names = check._module_names(shipped.components["modules"][kind], kind)
        for type_ in types:
            assert type_.replace("_", "") in names, (kind, type_)


def test_real_contrib_types_are_accepted(stack):
    stack.collector["processors"]["k8sattributes"] = {}
    stack.collector["connectors"] = {"spanmetrics": {}}
    stack.collector["exporters"]["loadbalancing"] = {}
    assert not [p for p in check.type_errors(stack.collector, "otelcol.yaml", stack.components)]


# --- each check fails on what it is meant to catch ---------------------------------------------------


def test_a_pipeline_naming_an_undeclared_processor_fails(stack):
    stack.collector["service"]["pipelines"]["metrics"]["processors"].append("batch/metrics")
    assert problems_with(stack, "uses processor 'batch/metrics', not declared")


def test_a_declared_but_unused_exporter_fails(stack):
    stack.collector["exporters"]["debug"] = {"verbosity": "basic"}
    assert problems_with(stack, "exporter 'debug' is declared but not used")


def test_an_extension_declared_but_not_enabled_fails(stack):
    stack.collector["service"]["extensions"].remove("health_check")
    assert problems_with(stack, "extension 'health_check' is declared but not used")


def test_a_connector_used_on_one_side_only_fails(stack):
    stack.collector["connectors"] = {"routing": {}}
    stack.collector["service"]["pipelines"]["traces/audit"]["exporters"].append("routing")
    assert problems_with(stack, "connector 'routing' must be an exporter of one pipeline and a receiver")


def test_a_misspelled_component_type_fails(stack):
    processors = stack.collector["processors"]
    processors["tail_samplng"] = processors.pop("tail_sampling")
    stack.collector["service"]["pipelines"]["traces/app"]["processors"][1] = "tail_samplng"
    assert problems_with(stack, "processor type 'tail_samplng' is not a known component")


def test_a_jaeger_component_unknown_to_jaeger_fails(stack):
    stack.jaeger["exporters"]["jaeger_storage"] = stack.jaeger["exporters"].pop("jaeger_storage_exporter")
    stack.jaeger["service"]["pipelines"]["traces"]["exporters"] = ["jaeger_storage"]
    assert problems_with(stack, "jaeger.yaml: exporter type 'jaeger_storage' is not a known component")


def test_an_in_memory_batch_on_the_decision_path_fails(stack):
    stack.collector["service"]["pipelines"]["traces/audit"]["processors"].append("batch")
    assert problems_with(stack, "pipeline 'traces/audit' exports decision spans after 'batch'")


def test_a_wrong_scope_name_sends_decisions_through_the_tail_sampler(stack):
    wrong = ['instrumentation_scope.name == "otel-rai"']
    stack.collector["processors"]["filter/no_decisions"]["traces"]["span"] = wrong
    assert problems_with(stack, "pipeline 'traces/app' exports decision spans after 'tail_sampling'")


def test_an_exporter_without_a_disk_queue_fails(stack):
    del stack.collector["exporters"]["otlp/jaeger"]["sending_queue"]["storage"]
    assert problems_with(stack, "needs sending_queue.storage")


def test_an_exporter_that_gives_up_fails(stack):
    stack.collector["exporters"]["otlp/jaeger"]["retry_on_failure"]["max_elapsed_time"] = "300s"
    assert problems_with(stack, "must retry forever")


def test_a_queue_on_a_disabled_storage_extension_fails(stack):
    stack.collector["exporters"]["otlp/jaeger"]["sending_queue"]["storage"] = "file_storage/other"
    assert problems_with(stack, "not an enabled file_storage")


def test_memory_limiter_not_first_fails(stack):
    chain = stack.collector["service"]["pipelines"]["metrics"]["processors"]
    chain.reverse()
    assert problems_with(stack, "pipeline 'metrics' must start with memory_limiter")


def test_a_tail_sampler_that_can_drop_decisions_fails(stack):
    policies = stack.collector["processors"]["tail_sampling"]["policies"]
    policies[:] = [p for p in policies if p["type"] != "ottl_condition"]
    assert problems_with(stack, f"always keeps spans with {semconv.MODEL_VERSION}")


def test_decisions_without_the_pii_processor_fail(stack):
    stack.collector["service"]["pipelines"]["traces/audit"]["processors"].remove("transform/pii")
    stack.collector["processors"].pop("transform/pii")
    assert problems_with(stack, "carries decision spans without the PII processor")


def _edit_allowlist(stack: check.Stack, edit) -> None:
    group = stack.collector["processors"]["transform/pii"]["trace_statements"][0]
    pattern = check._allowlist_pattern(stack.collector, "transform/pii")
    keep = next(i for i, s in enumerate(group["statements"]) if s.startswith("keep_matching_keys("))
    group["statements"][keep] = f'keep_matching_keys(attributes, "{edit(pattern)}")'


def test_an_allowlist_missing_a_documented_attribute_fails(stack):
    _edit_allowlist(stack, lambda p: p.replace("ml[.]model[.]version|", ""))
    assert problems_with(stack, f"deletes '{semconv.MODEL_VERSION}', defined in otel_rai/semconv.py")


def test_an_allowlist_keeping_an_undocumented_attribute_fails(stack):
    _edit_allowlist(stack, lambda p: p.replace("^(?:", "^(?:user[.]email|"))
    assert problems_with(stack, "keeps 'user.email', which otel_rai/semconv.py does not define")


def test_an_allowlist_keeping_all_raw_feature_values_fails(stack):
    _edit_allowlist(stack, lambda p: p.replace("^(?:", "^(?:ml[.]input[.]value[.].+|"))
    assert problems_with(stack, "keeps prefixes")


def test_a_new_semconv_attribute_missing_from_the_collector_fails(shipped, monkeypatch):
    monkeypatch.setattr(semconv, "SPAN_ATTRIBUTES", (*semconv.SPAN_ATTRIBUTES, "ml.explanation.top_features"))
    assert problems_with(shipped, "deletes 'ml.explanation.top_features'")


def test_the_trace_ui_input_goes_where_it_repeats_allowlisted_raw_values(stack):
    statements = stack.collector["processors"]["transform/pii"]["trace_statements"][0]["statements"]
    (delete,) = [s for s in statements if s.startswith("delete_key(")]
    # The OTTL condition's regular expression, as the collector reads it, matches what the SDK writes.
    regex = re.search(r'IsMatch\(attributes\["input\.value"\], "(.*)"\)$', delete)[1].replace('\\"', '"')
    assert re.search(regex, '{"decision_id":"a","input_hash":"ff","allowlisted":{"age":41}}')
    assert not re.search(regex, '{"decision_id":"a","input_hash":"ff"}')
    statements.remove(delete)
    assert problems_with(stack, "keeps 'input.value' without deleting it where it repeats allowlisted raw values")


def test_a_pii_processor_that_fails_open_fails(stack):
    stack.collector["processors"]["transform/pii"]["error_mode"] = "ignore"
    assert problems_with(stack, "must use error_mode: propagate")


def test_span_events_keeping_the_stacktrace_fail(stack):
    group = stack.collector["processors"]["transform/pii"]["trace_statements"][1]
    group["statements"][0] = group["statements"][0].replace('"exception.escaped"', '"exception.stacktrace"')
    assert problems_with(stack, "without exception.stacktrace")


def test_ephemeral_badger_fails(stack):
    stack.jaeger["extensions"]["jaeger_storage"]["backends"]["audit_store"]["badger"]["ephemeral"] = True
    assert problems_with(stack, "must set ephemeral: false")


def test_retention_under_six_months_fails(stack):
    stack.jaeger["extensions"]["jaeger_storage"]["backends"]["audit_store"]["badger"]["ttl"]["spans"] = "720h"
    assert problems_with(stack, "keeps spans less than six months")


def test_a_jaeger_server_without_an_explicit_address_fails(stack):
    stack.jaeger["extensions"]["jaeger_query"]["http"] = {}
    assert problems_with(stack, "extension jaeger_query http has no explicit endpoint")


def test_exporting_to_a_port_jaeger_does_not_listen_on_fails(stack):
    stack.collector["exporters"]["otlp/jaeger"]["endpoint"] = "jaeger:14317"
    assert problems_with(stack, "sends to jaeger:14317, where nothing listens")


def test_scraping_a_port_the_collector_does_not_listen_on_fails(stack):
    stack.collector["exporters"]["prometheus"]["endpoint"] = "0.0.0.0:9464"
    assert problems_with(stack, "scrapes otelcol:8889, where nothing listens")


def test_publishing_a_port_nothing_listens_on_fails(stack):
    stack.compose["services"]["jaeger"]["ports"] = ["16686:16687"]
    assert problems_with(stack, "jaeger publishes 16687, where nothing listens")


def test_a_port_table_out_of_date_fails(stack):
    stack.deploy_doc = stack.deploy_doc.replace("| 16686 | jaeger |", "| 16687 | jaeger |")
    found = check.port_errors(stack)
    assert any("does not list 16686 (jaeger)" in p for p in found)
    assert any("lists 16687 (jaeger), which compose.yaml does not publish" in p for p in found)


# --- ClickHouse -------------------------------------------------------------------------------------------


def test_decisions_go_to_jaeger_and_clickhouse(shipped):
    audit = shipped.collector["service"]["pipelines"]["traces/audit"]["exporters"]
    assert audit == ["otlp/jaeger", "clickhouse"]
    assert check.clickhouse_errors(shipped) == []


def test_an_exporter_creating_its_own_schema_fails(stack):
    stack.collector["exporters"]["clickhouse"]["create_schema"] = True
    assert problems_with(stack, "must not create its schema")


def test_an_exporter_writing_elsewhere_than_the_ddl_fails(stack):
    stack.collector["exporters"]["clickhouse"]["database"] = "default"
    assert problems_with(stack, "writes into default.otel_traces")


def test_a_clickhouse_queue_in_memory_fails(stack):
    del stack.collector["exporters"]["clickhouse"]["sending_queue"]["storage"]
    assert problems_with(stack, "exporter 'clickhouse' of decision spans needs sending_queue.storage")


def test_ddl_out_of_date_fails(stack):
    stack.clickhouse_sql["otel_rai.sql"] = stack.clickhouse_sql["otel_rai.sql"].replace("ZSTD(1)", "LZ4", 1)
    assert problems_with(stack, "clickhouse/otel_rai.sql: not what otel_rai/clickhouse/schema.py renders")


@pytest.mark.parametrize("name", ["otel_traces.sql", "otel_rai.sql", "cluster/otel_rai.sql"])
def test_a_clickhouse_table_kept_less_than_six_months_fails(stack, name):
    stack.clickhouse_sql[name] = stack.clickhouse_sql[name].replace("toIntervalDay(185)", "toIntervalDay(30)", 1)
    assert problems_with(stack, "keeps rows less than six months (TTL 30 days)")


def test_a_clickhouse_server_without_the_schema_at_first_start_fails(stack):
    stack.compose["services"]["clickhouse"]["volumes"] = ["clickhouse-data:/var/lib/clickhouse"]
    assert problems_with(stack, "does not run clickhouse/otel_rai.sql at its first start")


def test_a_clickhouse_exporter_sending_to_no_service_fails(stack):
    stack.collector["exporters"]["clickhouse"]["endpoint"] = "tcp://ch:9000"
    assert problems_with(stack, "sends to 'ch', which is no service of compose.yaml")
