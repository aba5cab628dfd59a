"""Every setting of otel-rai, declared once: name, type, default, environment variable and doc.

`Settings` holds the options of `otel_rai.instrument()`; `FairnessConfig` those of its ``fairness=``,
`MonitoringConfig` those of its ``monitoring=``.
`instrument()`'s signature, ``opentelemetry-instrument`` (environment only) and the table in
``docs/settings.md`` (``python -m otel_rai.settings``) all come from these declarations. Environment
variables are read here and nowhere else (`env`). This module imports nothing of otel-rai.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

#: Values of a boolean or path-or-boolean variable that mean "off".
OFF = frozenset({"0", "false", "off", "no"})
_ON = frozenset({"1", "true", "on", "yes"})

#: Variables otel-rai reads besides those of the options: name -> what it means.
OTHER_VARIABLES: dict[str, str] = {
    "OTEL_RAI_HOME": "the otel-rai data directory (default ``$XDG_DATA_HOME/otel-rai``, else "
                     "``~/.local/share/otel-rai``): the local store, spools",
    "XDG_DATA_HOME": "the base of the default data directory",
    "XDG_CONFIG_HOME": "the base of the directory of the generated hash key, ``$XDG_CONFIG_HOME/otel-rai`` "
                       "(default ``~/.config/otel-rai``), kept apart from the data it protects",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "the OTLP endpoint of traces (read by the OTel exporter; its "
                                          "presence turns the export on, as ``endpoint`` does)",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "the OTLP endpoint of all signals (as above)",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "``grpc`` or ``http/protobuf`` (as ``protocol``)",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "as above, for all signals",
    "OTEL_RAI_PHOENIX": "the ``phoenix`` command ``otel-rai stack up`` runs (default: this interpreter's "
                        "Phoenix, else ``phoenix`` on PATH)",
    "OTEL_RAI_PURE_PYTHON": "``1`` encodes spans and computes the keyed digests in Python only, even where the "
                            "native encoders were built "
                            "(``otel_rai/codec/_native.c``; the same bytes: to compare the two, or to rule the "
                            "native part out)",
    "PHOENIX_API_KEY": "the API key ``otel-rai query --backend phoenix`` sends, when set",
    "PHOENIX_PROJECT_NAME": "the Phoenix project ``otel-rai query --backend phoenix`` reads when no ``--service`` "
                            "names one (otel-rai makes the service the project; default: every project)",
    # MLflow (docs/mlflow.md)
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "OTLP headers of traces (read by the OTel exporter; with "
                                         "``mlflow_experiment``, the experiment header is added to them)",
    "MLFLOW_TRACKING_URI": "the MLflow tracking server: where ``mlflow_experiment`` sends decisions, where "
                           "registry versions are resolved, and what ``otel-rai query --backend mlflow`` reads",
    "MLFLOW_TRACKING_TOKEN": "a bearer token for the MLflow tracking server (a secret, never shown)",
    "MLFLOW_TRACKING_USERNAME": "basic authentication for the MLflow tracking server, with the password",
    "MLFLOW_TRACKING_PASSWORD": "the password of ``MLFLOW_TRACKING_USERNAME`` (a secret, never shown)",
    "MLFLOW_RUN_ID": "the MLflow run ``otel-rai check`` logs to (``mlflow run`` sets it)",
    "OTEL_RAI_MLFLOW_MODEL_URI": "the registry URI a served model was loaded from (``models:/credit/3``), for "
                                 "a model that the registry lists under several versions",
    "CLICKHOUSE_USER": "the user ``--backend clickhouse`` and ``export --to clickhouse`` log in as, when the URL "
                       "names none (default ``default``)",
    "CLICKHOUSE_PASSWORD": "that user's password, when the URL holds none",
}

#: Variables of the test suite (``scripts/test.sh``, ``tests/``), not of the package: name -> what it means.
TEST_VARIABLES: dict[str, str] = {
    "OTEL_RAI_TEST_STRICT": "set by ``scripts/test.sh``: a test whose server or browser is missing fails instead "
                            "of being skipped",
    "OTEL_RAI_TEST_VENVS": "where ``scripts/test.sh`` keeps the virtualenvs it makes (Arize Phoenix's; default "
                           "``~/.cache/otel-rai-test``)",
    "OTEL_RAI_TEST_ARTIFACTS": "where tests keep screenshots of the pages they render in Chromium (default "
                               "``build/test-artifacts``)",
}


def env(name: str) -> str | None:
    """The environment variable `name`, stripped; None when unset or blank. Only declared names."""
    if name not in _DECLARED:
        raise KeyError(f"otel-rai: {name} is not a declared environment variable")
    value = os.environ.get(name, "").strip()
    return value or None


def env_flag(name: str) -> bool:
    """The declared true/false variable `name` (1/0, true/false, on/off, yes/no); False when unset."""
    raw = env(name)
    if raw is None:
        return False
    try:
        return _flag(raw)
    except ValueError as exc:
        raise ValueError(f"otel-rai: {name}={raw!r} is not valid: {exc}") from None


def data_dir() -> Path:
    """Where otel-rai keeps its files: ``OTEL_RAI_HOME``, else ``$XDG_DATA_HOME/otel-rai``."""
    home = env("OTEL_RAI_HOME")
    if home:
        return Path(home).expanduser()
    xdg = env("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(xdg).expanduser() / "otel-rai"


#: The name of the generated hash key file.
HASH_KEY_FILE = "hash.key"


def hash_key_file() -> Path:
    """Where a generated hash key is kept: ``$XDG_CONFIG_HOME/otel-rai/hash.key`` (default
    ``~/.config/otel-rai/hash.key``): not in the data directory, so that a copy of the audit store does
    not carry the key that protects its input hashes."""
    config = env("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config).expanduser() / "otel-rai" / HASH_KEY_FILE


def legacy_hash_key_file() -> Path:
    """Where earlier versions kept the generated key: in the data directory."""
    return data_dir() / HASH_KEY_FILE


def private_directory(path: Path) -> Path:
    """`path` as a directory, each missing part created readable by its owner only (0700, whatever the
    umask: as the XDG base directory specification asks). An existing directory is left as it is."""
    missing = []
    for part in (path, *path.parents):
        if part.exists():
            break
        missing.append(part)
    for part in reversed(missing):
        try:
            part.mkdir(mode=0o700)
        except FileExistsError:  # another process was first
            continue
        os.chmod(part, 0o700)  # mkdir's mode is filtered by the umask; this is not
    return path


# --- parsing environment values ----------------------------------------------------------------------


def _text(value: str) -> str:
    return value


def _names(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _integer(value: str) -> int:
    return int(value)


def _number(value: str) -> float:
    return float(value)


def _flag(value: str) -> bool:
    lowered = value.lower()
    if lowered not in OFF | _ON:
        raise ValueError(f"{value!r} is not one of true/false, 1/0, on/off, yes/no")
    return lowered in _ON


def _path_or_flag(value: str) -> str | bool:
    """A path, or true/false."""
    lowered = value.lower()
    if lowered in OFF:
        return False
    if lowered in _ON:
        return True
    return value


def _option(default: Any, doc: str, *, env: str | None = None, parse: Callable[[str], Any] = _text,
            secret: bool = False, factory: Callable[[], Any] | None = None) -> Any:
    """One declared option: a dataclass field whose metadata carries its variable, parser and doc."""
    metadata = {"env": env, "parse": parse, "doc": doc, "secret": secret}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# --- fairness --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FairnessConfig:
    """How decisions are judged and fairness is monitored: ``otel_rai.instrument(fairness=...)``, and the
    defaults of ``otel-rai report``."""

    window: int | timedelta = _option(1000, "the gauges cover the newest N decisions (an int) or those of "
                                      "the last `timedelta`, per model version and sensitive attribute")
    min_group_size: int = _option(100, "a group with fewer decisions in the window (for the TPR/FPR terms: "
                                  "fewer actual positives/negatives) takes no part in differences and ratios")
    positive_label: Any = _option(None, "the label of a positive outcome (default: the second of two "
                                  "``classes_``, else 1)")
    score_threshold: float | None = _option(None, "judge scored calls by the positive class's score at or "
                                            "above this value instead of the predicted label; for "
                                            "regressors, by the predicted value")
    demographic_parity_ratio_min: float | None = _option(0.8, "alert below this demographic parity ratio "
                                                         "(the four-fifths rule); None: no alert")
    equalized_odds_difference_max: float | None = _option(0.1, "alert above this equalized odds difference; "
                                                          "None: no alert")
    alert_hysteresis: float = _option(0.02, "how far back beyond its threshold a value must come before its "
                                      "alert resolves")
    on_alert: Callable[[Any], None] | None = _option(None, "called on the audit worker thread with each "
                                                     "`FairnessAlert`, firing and resolved")
    max_groups: int = _option(100, "distinct groups kept per attribute; further groups count as ``(other)``")
    max_remembered: int = _option(100_000, "decisions remembered for `record_outcome`, oldest forgotten first")

    def __post_init__(self) -> None:
        window = self.window.total_seconds() if isinstance(self.window, timedelta) else self.window
        if isinstance(window, bool) or not isinstance(window, (int, float)) or window <= 0:
            raise ValueError(f"otel-rai: FairnessConfig.window must be a positive int or timedelta, not {window!r}")
        if self.min_group_size < 1 or self.max_groups < 2 or self.max_remembered < 0 or self.alert_hysteresis < 0:
            raise ValueError("otel-rai: FairnessConfig needs min_group_size >= 1, max_groups >= 2, "
                             "max_remembered >= 0 and alert_hysteresis >= 0")


# --- monitoring: quality and drift (docs/monitoring.md) ---------------------------------------------


@dataclass(frozen=True)
class MonitoringConfig:
    """How model quality and input drift are monitored: ``otel_rai.instrument(monitoring=...)``, and the
    defaults of ``otel-rai monitor``."""

    enabled: bool = _option(True, "monitor quality (from `record_outcome`) and drift (against a reference "
                            "profile); False turns both off")
    window: int | timedelta | None = _option(None, "the window of the gauges: the newest N decisions (an int) "
                                             "or those of the last `timedelta`, per model version; None: "
                                             "`FairnessConfig.window`")
    max_window_rows: int = _option(100_000, "a time window keeps at most this many decisions (the newest)")
    numeric_bins: int = _option(10, "quantile bins of a numeric feature in the reference profile (deciles)")
    top_k: int = _option(10, "categories of a categorical feature kept by name; the rest count as other")
    edge_digits: int | None = _option(3, "significant digits of the quantile edges (coarser edges reveal "
                                      "less of the reference data); None keeps them exact")
    max_reference_rows: int = _option(20_000, "rows sampled from the reference data to build a profile (and "
                                      "kept from a fit until the model's first decision)")
    capture_at_fit: bool = _option(True, "build the reference profile of a model from the data of its "
                                   "outermost fit, unless `register_model(reference=...)` gives one")
    max_features: int = _option(500, "features profiled per model version (the first ones)")
    min_rows: int = _option(200, "decisions in the window (labelled ones, for quality) before a drift or "
                            "quality alert may fire")
    psi_max: float | None = _option(0.2, "alert when a feature's population stability index exceeds this; "
                                    "None: no drift alert")
    accuracy_drop_max: float | None = _option(0.05, "alert when accuracy falls more than this below the "
                                              "baseline; None: no alert")
    roc_auc_drop_max: float | None = _option(0.05, "alert when ROC AUC falls more than this below the "
                                             "baseline; None: no alert")
    alert_hysteresis: float = _option(0.02, "how far back beyond its threshold a value must come before its "
                                      "alert resolves")
    on_alert: Callable[[Any], None] | None = _option(None, "called on the audit worker thread with each "
                                                     "`MonitoringAlert`, firing and resolved")
    snapshot_interval: float = _option(300.0, "seconds between drift snapshots of a model version whose window "
                                       "changed, written to the local audit store (what ``otel-rai monitor`` and "
                                       "the report read drift from)")
    max_remembered: int = _option(100_000, "decisions remembered for their labels, oldest forgotten first")

    def __post_init__(self) -> None:
        window = self.window.total_seconds() if isinstance(self.window, timedelta) else self.window
        if window is not None and (isinstance(window, bool) or not isinstance(window, (int, float)) or window <= 0):
            raise ValueError(f"otel-rai: MonitoringConfig.window must be a positive int or timedelta, not {window!r}")
        for name in ("max_window_rows", "numeric_bins", "top_k", "max_reference_rows", "max_features",
                     "min_rows", "max_remembered"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"otel-rai: MonitoringConfig.{name} must be a whole number of at least 1, "
                                 f"not {value!r}")
        if self.numeric_bins < 2 or (self.edge_digits is not None and self.edge_digits < 1):
            raise ValueError("otel-rai: MonitoringConfig needs numeric_bins >= 2 and edge_digits >= 1 (or None)")
        for name in ("psi_max", "accuracy_drop_max", "roc_auc_drop_max"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"otel-rai: MonitoringConfig.{name} must be >= 0 or None, not {value!r}")
        if not self.alert_hysteresis >= 0 or not self.snapshot_interval > 0:
            raise ValueError("otel-rai: MonitoringConfig needs alert_hysteresis >= 0 and snapshot_interval > 0")


# --- instrument() ----------------------------------------------------------------------------------

FAILURE_MODES = ("log", "raise")
PROTOCOLS = ("grpc", "http/protobuf")


@dataclass(frozen=True)
class Settings:
    """The options of `otel_rai.instrument()`, resolved: an argument, else its environment variable, else
    its default. Read by every layer of an instrumented process; built once by `resolve`."""

    service_name: str | None = _option(None, "``service.name`` of the audit spans (also the Phoenix project)",
                                       env="OTEL_SERVICE_NAME")
    model_version: str | None = _option(None, "the version of models that neither `register_model` nor a "
                                        "``model_version`` attribute names (else the fingerprint)",
                                        env="OTEL_RAI_MODEL_VERSION")
    hash_key: Any = _option(None, "the key of the input hashes: str, bytes or `HashKey` (else a generated "
                            "key file)", env="OTEL_RAI_HASH_KEY", secret=True)
    capture_features: frozenset[str] = _option(frozenset(), "feature names whose raw values may go on spans "
                                                "(comma-separated in the variable)",
                                                env="OTEL_RAI_CAPTURE_FEATURES", parse=_names)
    sensitive_features: tuple[Any, ...] = _option((), "input columns whose groups the fairness metrics "
                                                  "compare; a tuple, or ``sex&race`` in the variable, is an "
                                                  "intersection", env="OTEL_RAI_SENSITIVE_FEATURES",
                                                  parse=_names)
    fairness: FairnessConfig = _option(None, "windows, positive label, alert thresholds and callback "
                                       "(`FairnessConfig`)", factory=FairnessConfig)
    monitoring: MonitoringConfig = _option(None, "quality and drift monitoring: windows, bins, thresholds "
                                           "and callback (`MonitoringConfig`)", factory=MonitoringConfig)
    tracer_provider: Any = _option(None, "send decision spans through this provider instead of the "
                                   "always-on audit provider (its sampler then decides what is kept)")
    meter_provider: Any = _option(None, "where the metrics go (default: the global meter provider)")
    endpoint: str | None = _option(None, "the OTLP endpoint (default: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` "
                                   "or ``OTEL_EXPORTER_OTLP_ENDPOINT``, read by the exporter)")
    protocol: str | None = _option(None, "``grpc`` or ``http/protobuf`` (default: the OTLP protocol "
                                   "variables, else grpc)")
    headers: Mapping[str, str] | str | None = _option(None, "OTLP headers, a mapping or ``k=v,k2=v2`` "
                                                      "(default: ``OTEL_EXPORTER_OTLP_HEADERS``, read by "
                                                      "the exporter)")
    store: str | os.PathLike[str] | bool | None = _option(
        None, "the local audit store: a path, true for the default (``audit.db`` in the data directory) or "
        "false for none. Default: used when no OTLP endpoint is configured; with one, the store is the "
        "write-ahead log of the export", env="OTEL_RAI_STORE", parse=_path_or_flag)
    spool: str | os.PathLike[str] | bool | None = _option(
        None, "with an endpoint and no store, decisions are spooled to this file first (default: one in "
        "the data directory); false keeps them in memory instead", env="OTEL_RAI_SPOOL",
        parse=_path_or_flag)
    on_audit_failure: str = _option("log", "``log``: a failed audit is logged and counted and the "
                                    "prediction returns; ``raise`` (fail-closed): each call waits for its "
                                    "record to be committed and raises `AuditUnavailableError` if not",
                                    env="OTEL_RAI_ON_AUDIT_FAILURE")
    checkpoint_key: Any = _option(None, "signs the chain's checkpoints: a secret (HMAC-SHA256) or an "
                                  "Ed25519 private key of ``cryptography`` (else unsigned)",
                                  env="OTEL_RAI_CHECKPOINT_KEY", secret=True)
    checkpoint_interval: float = _option(60.0, "seconds between checkpoints of a stream with new records",
                                         env="OTEL_RAI_CHECKPOINT_INTERVAL", parse=_number)
    explain: bool = _option(True, "per-decision explanations (docs/explanations.md)", env="OTEL_RAI_EXPLAIN",
                            parse=_flag)
    explain_top_k: int = _option(4, "attributions per row on the span (adverse-action notices name about "
                                 "four reasons)", env="OTEL_RAI_EXPLAIN_TOP_K", parse=_integer)
    explain_budget_us: float = _option(2000.0, "estimated per-row cost above which tree ensembles get "
                                       "Saabas attribution instead of exact TreeSHAP",
                                       env="OTEL_RAI_EXPLAIN_BUDGET_US", parse=_number)
    explain_max_evals: int = _option(4096, "model evaluations per row of the model-agnostic method",
                                     env="OTEL_RAI_EXPLAIN_MAX_EVALS", parse=_integer)
    max_rows_per_span: int = _option(1000, "rows per decision span; larger calls become chunk spans under "
                                     "one parent", env="OTEL_RAI_MAX_ROWS_PER_SPAN", parse=_integer)
    max_pending_calls: int = _option(10_000, "calls waiting for the audit worker before a new call blocks "
                                     "(back-pressure, never a drop)", env="OTEL_RAI_MAX_PENDING_CALLS",
                                     parse=_integer)
    max_pending_rows: int = _option(1_000_000, "rows of multi-row calls waiting for the audit worker before "
                                    "a new one blocks (one larger call still goes in alone)",
                                    env="OTEL_RAI_MAX_PENDING_ROWS", parse=_integer)
    trace_ui: bool | None = _option(None, "OpenInference-style attributes on decision spans for trace UIs "
                                    "(Phoenix, MLflow): span kind, input and output as JSON (docs/"
                                    "semantic-conventions.md). Default: on when spans leave the process (an OTLP "
                                    "endpoint or a ``tracer_provider``), off for the local store alone, which no "
                                    "UI reads (``otel-rai replay`` adds them)", env="OTEL_RAI_TRACE_UI",
                                    parse=_flag)
    max_export_backlog: int = _option(100_000, "spans held in memory for export without a spool "
                                      "(``spool=False``) before the worker waits",
                                      env="OTEL_RAI_MAX_EXPORT_BACKLOG", parse=_integer)
    # --- model records and artifacts (docs/model-records.md) ---
    model_records: bool = _option(True, "one model record span per fitted model and process: parameters, "
                                  "library versions, feature schema, training-data hash",
                                  env="OTEL_RAI_MODEL_RECORDS", parse=_flag)
    artifacts: str | os.PathLike[str] | bool | None = _option(
        None, "where each fitted model that decides is saved once, by fingerprint, for ``otel-rai reproduce``: "
        "a directory or an fsspec URL; true for the default (``artifacts`` beside the audit store, else in the "
        "data directory), false for none. Default: true", env="OTEL_RAI_ARTIFACTS", parse=_path_or_flag)
    # Hardening (docs/audit-trail.md, threat model): what may leave the process beyond the default.
    record_exception_messages: bool = _option(False, "record the full message and stack trace (source "
                                              "lines included) of a failed call; by default only the "
                                              "exception type and a template of them with every literal "
                                              "replaced, since a message can quote the input",
                                              env="OTEL_RAI_RECORD_EXCEPTION_MESSAGES", parse=_flag)
    explain_exact_values: bool = _option(False, "publish attributions exactly (6 significant digits); by "
                                         "default they are rounded to a grid of 1/50 of the widest "
                                         "attribution spread, so that no raw value can be recovered from them "
                                         "to better than 2 % of its range (docs/explanations.md)",
                                         env="OTEL_RAI_EXPLAIN_EXACT_VALUES", parse=_flag)
    mlflow_experiment: str | None = _option(None, "send decisions to this experiment of the MLflow tracking "
                                            "server (``MLFLOW_TRACKING_URI``) over OTLP/HTTP: an id, or a name "
                                            "(looked up, and created when missing)",
                                            env="OTEL_RAI_MLFLOW_EXPERIMENT")

    def __post_init__(self) -> None:
        for name in ("max_rows_per_span", "max_pending_calls", "max_pending_rows", "max_export_backlog",
                     "explain_top_k", "explain_max_evals"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"otel-rai: {name} must be a whole number of at least 1, not {value!r}")
        if not self.explain_budget_us >= 0:
            raise ValueError(f"otel-rai: explain_budget_us must not be negative, not {self.explain_budget_us!r}")
        if not self.checkpoint_interval > 0:
            raise ValueError(f"otel-rai: checkpoint_interval must be positive, not {self.checkpoint_interval!r}")
        if self.on_audit_failure not in FAILURE_MODES:
            raise ValueError(f"otel-rai: on_audit_failure must be one of {', '.join(FAILURE_MODES)}, "
                             f"not {self.on_audit_failure!r}")
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ValueError(f"otel-rai: OTLP protocol {self.protocol!r} is not supported; use one of "
                             f"{', '.join(PROTOCOLS)}")
        if not isinstance(self.fairness, FairnessConfig):
            raise TypeError(f"otel-rai: fairness must be a FairnessConfig, not {type(self.fairness).__name__}")
        if not isinstance(self.monitoring, MonitoringConfig):
            raise TypeError(f"otel-rai: monitoring must be a MonitoringConfig, not {type(self.monitoring).__name__}")

    @classmethod
    def resolve(cls, **options: Any) -> Settings:
        """Settings from `instrument()`'s keywords; an option not given (or None) comes from its variable."""
        unknown = sorted(set(options) - set(_FIELDS))
        if unknown:
            raise TypeError(f"otel-rai: instrument() got unknown options {', '.join(unknown)}")
        values = {}
        for name in _FIELDS:
            value = options.get(name)
            if value is None:
                value = from_env(name)
            if value is not None:
                values[name] = _normalised(name, value)
        return cls(**values)


_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Settings)}
_DECLARED = frozenset(
    [f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata["env"]]
    + list(OTHER_VARIABLES)
    + ["OTEL_EXPORTER_OTLP_HEADERS"]
)


def default(name: str) -> Any:
    """The default of option `name` of `Settings`."""
    return _FIELDS[name].default


def from_env(name: str) -> Any:
    """The value of option `name` from its environment variable, parsed; None when unset."""
    f = _FIELDS[name]
    variable = f.metadata["env"]
    raw = env(variable) if variable else None
    if raw is None:
        return None
    try:
        return f.metadata["parse"](raw)
    except ValueError as exc:
        if f.metadata["secret"]:  # the parser's message could quote the secret
            raise ValueError(f"otel-rai: {variable} (a secret, not shown) is not valid") from None
        raise ValueError(f"otel-rai: {variable}={raw!r} is not valid: {exc}") from None


def _normalised(name: str, value: Any) -> Any:
    if name == "capture_features":
        if isinstance(value, str):
            raise TypeError("otel-rai: capture_features must be a list of names, not one string")
        return frozenset(str(v) for v in value)
    if name == "sensitive_features":
        if isinstance(value, str):
            raise TypeError("otel-rai: sensitive_features must be a list of names, not one string")
        return tuple(value)
    if name in ("model_version", "service_name", "mlflow_experiment"):
        return str(value) or None
    return value


def otlp_endpoint_configured(endpoint: str | None = None) -> bool:
    """Whether an OTLP endpoint is set, by argument or by the standard variables."""
    return bool(endpoint or env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env("OTEL_EXPORTER_OTLP_ENDPOINT"))


def otlp_protocol(protocol: str | None = None) -> str:
    """The OTLP protocol: the argument, else the standard variables, else grpc."""
    chosen = protocol or env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if chosen not in PROTOCOLS:
        raise ValueError(f"otel-rai: OTLP protocol {chosen!r} is not supported; use one of {', '.join(PROTOCOLS)}")
    return chosen


# --- generated surfaces ----------------------------------------------------------------------------


def signature() -> inspect.Signature:
    """`instrument()`'s keyword-only signature, from `Settings`."""
    return inspect.Signature([
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=f.type)
        for f in dataclasses.fields(Settings)
    ])


def _default_text(f: dataclasses.Field) -> str:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f"{f.default_factory.__name__}()"  # type: ignore[misc]
    return repr(f.default)


def option_docs(fields: Iterable[dataclasses.Field] | None = None) -> str:
    """One ``name: doc (default, variable)`` paragraph per option, for docstrings."""
    lines = []
    for f in fields if fields is not None else dataclasses.fields(Settings):
        variable = f", ``{f.metadata['env']}``" if f.metadata["env"] else ""
        lines.append(f"{f.name}: {f.metadata['doc']} (default {_default_text(f)}{variable}).")
    return "\n".join(lines)


_LITERAL = re.compile(r"``(.+?)``")


def _markdown(doc: str) -> str:
    """`doc` with its double-backtick literals as Markdown code spans."""
    return _LITERAL.sub(r"`\1`", doc)


def markdown_table() -> str:
    """The tables of ``docs/settings.md``: every option with its variable, ``FairnessConfig``'s fields, and
    every other variable otel-rai (or its test suite) reads."""
    rows = ["| option | variable | default | what it does |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        variable = f"`{f.metadata['env']}`" if f.metadata["env"] else ""
        rows.append(f"| `{f.name}` | {variable} | `{_default_text(f)}` | {_markdown(f.metadata['doc'])} |")
    rows += ["", "`fairness=FairnessConfig(...)`:", "", "| field | default | what it does |", "|---|---|---|"]
    for f in dataclasses.fields(FairnessConfig):
        rows.append(f"| `{f.name}` | `{_default_text(f)}` | {_markdown(f.metadata['doc'])} |")
    rows += ["", "`monitoring=MonitoringConfig(...)`:", "", "| field | default | what it does |", "|---|---|---|"]
    for f in dataclasses.fields(MonitoringConfig):
        rows.append(f"| `{f.name}` | `{_default_text(f)}` | {_markdown(f.metadata['doc'])} |")
    for title, variables in (("Other variables:", OTHER_VARIABLES),
                             ("Variables of the test suite, not read by the package:", TEST_VARIABLES)):
        rows += ["", title, "", "| variable | what it means |", "|---|---|"]
        rows += [f"| `{name}` | {_markdown(doc)} |" for name, doc in variables.items()]
    return "\n".join(rows) + "\n"


PAGE_HEADER = """# Settings

Every option of `otel_rai.instrument()` and every environment variable otel-rai reads, generated from
their single definition in `otel_rai/settings.py` (`python -m otel_rai.settings > docs/settings.md`; a
test checks that this page is up to date). An argument of `instrument()` wins over its variable, which
wins over the default. The standard `OTEL_*` variables (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_*`,
`OTEL_RESOURCE_ATTRIBUTES`) keep their OpenTelemetry meaning.

"""


def markdown_page() -> str:
    """``docs/settings.md``: a short introduction, then `markdown_table`."""
    return PAGE_HEADER + markdown_table()


if __name__ == "__main__":
    print(markdown_page(), end="")
