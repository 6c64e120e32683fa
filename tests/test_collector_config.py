"""The offline collector-config checker, and the shipped config and collector/."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from showmax_otel import collector_config
from showmax_otel.collector_config import (
    ERROR,
    INFO,
    WARNING,
    Finding,
    check_config,
    find_schema_dir,
)

ROOT = Path(__file__).resolve().parent.parent
ROOT_CONFIG = ROOT / "otel-collector.yaml"
DEPLOYMENT = ROOT / "collector"
DEV_OVERLAY = DEPLOYMENT / "otel-collector.dev.yaml"
DATA = Path(__file__).resolve().parent / "data" / "collector"

# Found once, at import: the autouse fixture in conftest.py removes every
# SHOWMAX_OTEL_* variable, SHOWMAX_OTEL_COLLECTOR_SCHEMA_DIR included.
SCHEMA_DIR, LOOKED_IN = find_schema_dir(ROOT_CONFIG)
needs_schema = pytest.mark.skipif(
    SCHEMA_DIR is None,
    reason="collector-schema folder not found (looked in "
    + ", ".join(str(path) for path in LOOKED_IN[:4])
    + "); set SHOWMAX_OTEL_COLLECTOR_SCHEMA_DIR to run the schema checks",
)


def failing(findings: list[Finding]) -> list[str]:
    return [finding.format() for finding in findings if finding.fails]


def find(findings: list[Finding], severity: str, where: str, fragment: str) -> Finding:
    for finding in findings:
        if (
            finding.severity == severity
            and finding.where == where
            and fragment in finding.message
        ):
            return finding
    shown = "\n".join(finding.format() for finding in findings) or "(none)"
    raise AssertionError(f"no {severity} at {where} about {fragment!r}; got:\n{shown}")


def root_data() -> dict[str, Any]:
    data = yaml.safe_load(ROOT_CONFIG.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def write_config(folder: Path, data: dict[str, Any], header: str = "") -> Path:
    path = folder / "otel-collector.yaml"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


PINNED_HEADER = "# Pinned: otelcol-contrib 0.159.0\n"


# -- the shipped config -------------------------------------------------------


@needs_schema
def test_production_config_and_deployment_are_clean() -> None:
    """otel-collector.yaml and collector/ pass every check with no finding."""
    findings = check_config(ROOT_CONFIG, SCHEMA_DIR)

    assert failing(findings) == []
    assert [f.format() for f in findings if f.severity == INFO] == []


@needs_schema
def test_dev_overlay_merged_with_production_config_is_clean() -> None:
    """The dev overlay merged after the root config leaves nothing failing."""
    findings = check_config([ROOT_CONFIG, DEV_OVERLAY], SCHEMA_DIR)

    assert failing(findings) == []


def test_production_config_pins_the_version_its_images_use() -> None:
    """The header pins otelcol-contrib, and compose and Kubernetes run that image."""
    header = ROOT_CONFIG.read_text(encoding="utf-8").split("\n\n", 1)[0]
    pinned = re.search(r"otelcol-contrib (\d+\.\d+\.\d+)", header)
    assert pinned is not None

    image = f"otel/opentelemetry-collector-contrib:{pinned.group(1)}"
    assert image in (DEPLOYMENT / "docker-compose.yaml").read_text(encoding="utf-8")
    assert image in (DEPLOYMENT / "k8s" / "deployment.yaml").read_text(encoding="utf-8")


def test_every_pipeline_starts_with_memory_limiter_and_queues_on_disk() -> None:
    """Each pipeline begins with memory_limiter; each exporter has a stored queue."""
    data = root_data()

    for pipeline in data["service"]["pipelines"].values():
        assert pipeline["processors"][0] == "memory_limiter"
        for exporter in pipeline["exporters"]:
            queue = data["exporters"][exporter]["sending_queue"]
            assert queue["storage"] in data["service"]["extensions"]


def test_every_setting_has_a_comment_saying_why() -> None:
    """Each leaf setting has a comment on its line, above it, or above its parent."""
    lines = ROOT_CONFIG.read_text(encoding="utf-8").splitlines()
    node = yaml.compose("\n".join(lines))
    # Structure, not tuning: pipeline wiring and the service's extension list.
    exempt = re.compile(r"^service\.(pipelines\..*|extensions)$")

    def commented(line: int) -> bool:
        # `line` is 0-based: a comment at its end or on the line just above.
        above = lines[line - 1].strip() if line > 0 else ""
        return "#" in lines[line].split("'")[0] or above.startswith("#")

    uncommented = []

    def walk(current: Any, path: list[str], parents: list[int]) -> None:
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                walk(value, [*path, key.value], [*parents, key.start_mark.line])
        elif (
            path
            and not exempt.match(".".join(path))
            and not any(commented(line) for line in parents[-2:])
        ):
            uncommented.append(".".join(path))

    walk(node, [], [])

    assert uncommented == []


def test_secret_key_patterns_remove_credentials_and_keep_other_keys() -> None:
    """The delete patterns match credential keys and spare look-alikes."""
    data = root_data()
    actions = data["processors"]["attributes/drop-secrets"]["actions"]
    patterns = [re.compile(action["pattern"]) for action in actions]
    masked = data["processors"]["redaction"]["blocked_key_patterns"]

    def removed(key: str) -> bool:
        return any(pattern.search(key) for pattern in patterns)

    for key in (
        "http.request.header.authorization",
        "http.request.header.cookie",
        "http.response.header.set-cookie",
        "http.request.header.x-api-key",
        "client.api_key",
        "oauth.access_token",
        "token",
        "user.password",
        "db.client_secret",
    ):
        assert removed(key), key
    for key in (
        "http.request.method",
        "gen_ai.usage.input_tokens",
        "url.path",
        "user_agent.original",
        "tokenizer.name",
    ):
        assert not removed(key), key
    assert masked == [action["pattern"] for action in actions]


def test_importing_the_checker_loads_nothing_heavy() -> None:
    """Importing collector_config and _rotel imports no yaml and starts nothing."""
    code = (
        "import sys, threading; import showmax_otel.collector_config, "
        "showmax_otel._rotel; print('yaml' in sys.modules, threading.active_count())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert result.stdout.split() == ["False", "1"]


# -- broken configs -----------------------------------------------------------


@needs_schema
@pytest.mark.parametrize(
    ("fixture", "severity", "where", "fragment"),
    [
        pytest.param(
            "misspelt_key.yaml",
            ERROR,
            "receivers.otlp.protocols.grpc.max_recv_msg_size",
            "did you mean `max_recv_msg_size_mib`",
            id="misspelt-key",
        ),
        pytest.param(
            "undefined_exporter.yaml",
            ERROR,
            "service.pipelines.logs.exporters[0]",
            "`otlphttp/backend` is not defined",
            id="undefined-exporter",
        ),
        pytest.param(
            "memory_limiter_last.yaml",
            ERROR,
            "service.pipelines.logs.processors[1]",
            "memory_limiter is at position 2",
            id="memory-limiter-last",
        ),
        pytest.param(
            "literal_token.yaml",
            ERROR,
            "exporters.otlp_http.headers.authorization",
            "written literally",
            id="literal-token",
        ),
    ],
)
def test_broken_fixture_yields_its_finding(
    fixture: str, severity: str, where: str, fragment: str
) -> None:
    """Each broken fixture file produces the finding it was written to provoke."""
    findings = check_config(DATA / fixture, SCHEMA_DIR)

    finding = find(findings, severity, where, fragment)
    assert finding.fix
    assert finding.line is not None


@needs_schema
def test_minimal_fixture_is_clean() -> None:
    """The fixtures' common base config has no finding."""
    assert check_config(DATA / "valid_minimal.yaml", SCHEMA_DIR) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split("::")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        *parents, last = path.split("::")
        target = data
        for part in parents:
            target = target[part]
        del target[last]

    return mutate


def _both(
    first: Callable[[dict[str, Any]], None], second: Callable[[dict[str, Any]], None]
) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        first(data)
        second(data)

    return mutate


def _rename_exporter(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["exporters"][new] = data["exporters"].pop(old)
        for pipeline in data["service"]["pipelines"].values():
            pipeline["exporters"] = [
                new if name == old else name for name in pipeline["exporters"]
            ]

    return mutate


def _add_batch_processor(data: dict[str, Any]) -> None:
    data["processors"]["batch"] = {}
    data["service"]["pipelines"]["logs"]["processors"].append("batch")


GRPC = "receivers::otlp::protocols::grpc"
ES = "exporters::elasticsearch/logs"
TRACES = "exporters::otlp_grpc/traces"

MUTATIONS = [
    pytest.param(
        _set(f"{ES}::log_index", "logs-app"),
        ERROR,
        "exporters.elasticsearch/logs.log_index",
        "did you mean `logs_index`",
        id="misspelt-elasticsearch-key",
    ),
    pytest.param(
        _set(f"{TRACES}::retry_on_failure::max_elapsed", "1h"),
        ERROR,
        "exporters.otlp_grpc/traces.retry_on_failure.max_elapsed",
        "did you mean `max_elapsed_time`",
        id="misspelt-retry-key",
    ),
    pytest.param(
        _set(f"{TRACES}::endpoint", "$OTELCOL_TRACES_ENDPOINT"),
        ERROR,
        "exporters.otlp_grpc/traces.endpoint",
        "`$OTELCOL_TRACES_ENDPOINT` is not expanded",
        id="bare-variable",
    ),
    pytest.param(
        _set(
            "extensions::bearertokenauth/ingest::token", "${env:TOKEN:-hunter2hunter2}"
        ),
        ERROR,
        "extensions.bearertokenauth/ingest.token",
        "literal default",
        id="secret-with-literal-default",
    ),
    pytest.param(
        _set(f"{ES}::password", "hunter2hunter2"),
        ERROR,
        "exporters.elasticsearch/logs.password",
        "written literally",
        id="literal-password",
    ),
    pytest.param(
        _both(_set(f"{GRPC}::endpoint", "0.0.0.0:4317"), _delete(f"{GRPC}::auth")),
        ERROR,
        "receivers.otlp.protocols.grpc.endpoint",
        "all interfaces (0.0.0.0) without auth",
        id="wildcard-listener-without-auth",
    ),
    pytest.param(
        _set("extensions::health_check::endpoint", "0.0.0.0:13133"),
        ERROR,
        "extensions.health_check.endpoint",
        "all interfaces (0.0.0.0) without TLS and auth",
        id="wildcard-health-check",
    ),
    pytest.param(
        _set(
            "service::telemetry::metrics",
            {"readers": [{"pull": {"exporter": {"prometheus": {"host": "[::]"}}}}]},
        ),
        ERROR,
        "service.telemetry.metrics.readers[0].pull.exporter.prometheus.host",
        "listen on all interfaces ([::])",
        id="wildcard-own-metrics",
    ),
    pytest.param(
        _set("service::extensions", ["health_check", "bearertokenauth/ingest"]),
        ERROR,
        "exporters.elasticsearch/logs.sending_queue.storage",
        "not in service.extensions",
        id="storage-extension-not-enabled",
    ),
    pytest.param(
        _set(f"{GRPC}::auth::authenticator", "bearertokenauth/apps"),
        ERROR,
        "receivers.otlp.protocols.grpc.auth.authenticator",
        "did you mean `bearertokenauth/ingest`",
        id="undefined-authenticator",
    ),
    pytest.param(
        _set("service::pipelines::traces::processors", ["resource"]),
        ERROR,
        "service.pipelines.traces.processors",
        "has no memory_limiter",
        id="no-memory-limiter",
    ),
    pytest.param(
        _delete("processors::memory_limiter::limit_percentage"),
        ERROR,
        "processors.memory_limiter",
        "needs `limit_mib` or `limit_percentage`",
        id="memory-limiter-without-limit",
    ),
    pytest.param(
        _set(f"{ES}::sending_queue::batch::flush_timeout", 5),
        ERROR,
        "exporters.elasticsearch/logs.sending_queue.batch.flush_timeout",
        "5 means 5ns",
        id="duration-without-unit",
    ),
    pytest.param(
        _set(f"{GRPC}::max_recv_msg_size_mib", "16MiB"),
        ERROR,
        "receivers.otlp.protocols.grpc.max_recv_msg_size_mib",
        "expects an integer",
        id="integer-as-text",
    ),
    pytest.param(
        _rename_exporter("otlp_grpc/traces", "otlp/traces"),
        WARNING,
        "exporters.otlp/traces",
        "deprecated alias of `otlp_grpc`",
        id="deprecated-otlp-alias",
    ),
    pytest.param(
        _rename_exporter("otlp_grpc/traces", "otlpgrpc/traces"),
        WARNING,
        "exporters.otlpgrpc/traces",
        "did you mean `otlp_grpc`",
        id="unknown-component-type",
    ),
    pytest.param(
        _add_batch_processor,
        WARNING,
        "service.pipelines.logs.processors[5]",
        "holds data in memory before the persistent queue",
        id="batch-processor-before-persistent-queue",
    ),
    pytest.param(
        _both(
            _set(f"{TRACES}::sending_queue::sizer", "requests"),
            _delete(f"{TRACES}::sending_queue::batch::sizer"),
        ),
        ERROR,
        "exporters.otlp_grpc/traces.sending_queue.batch.sizer",
        "batches accept only `items` or `bytes`",
        id="batch-inherits-requests-sizer",
    ),
    pytest.param(
        _set(f"{ES}::sending_queue::enabled", False),
        WARNING,
        "exporters.elasticsearch/logs.sending_queue",
        "has no sending queue",
        id="queue-disabled",
    ),
    pytest.param(
        _set("service::pipelines::log", {"receivers": ["otlp"], "exporters": ["x"]}),
        ERROR,
        "service.pipelines.log",
        "did you mean `logs`",
        id="pipeline-signal-typo",
    ),
]


@needs_schema
@pytest.mark.parametrize(("mutate", "severity", "where", "fragment"), MUTATIONS)
def test_broken_production_config_yields_finding(
    tmp_path: Path,
    mutate: Callable[[dict[str, Any]], None],
    severity: str,
    where: str,
    fragment: str,
) -> None:
    """One change to the production config produces the finding that names it."""
    data = root_data()
    mutate(data)
    config = write_config(tmp_path, data, PINNED_HEADER)

    findings = check_config(config, SCHEMA_DIR)

    assert find(findings, severity, where, fragment).fix


@needs_schema
def test_wildcard_listener_without_tls_and_auth_is_refused(tmp_path: Path) -> None:
    """A receiver on 0.0.0.0 without TLS and auth is an error naming both."""
    data = root_data()
    grpc = data["receivers"]["otlp"]["protocols"]["grpc"]
    grpc["endpoint"] = "0.0.0.0:4317"
    del grpc["tls"], grpc["auth"]

    findings = check_config(write_config(tmp_path, data, PINNED_HEADER), SCHEMA_DIR)

    find(
        findings,
        ERROR,
        "receivers.otlp.protocols.grpc.endpoint",
        "all interfaces (0.0.0.0) without TLS and auth",
    )


@needs_schema
def test_new_component_name_is_refused_for_an_older_pinned_collector(
    tmp_path: Path,
) -> None:
    """otlp_grpc is an error when the collector pinned predates the rename."""
    config = write_config(tmp_path, root_data())

    findings = check_config(config, SCHEMA_DIR, collector_version="0.140.0")

    find(findings, ERROR, "exporters.otlp_grpc/traces", "does not know it")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("receivers: [unclosed\n", "not valid YAML", id="invalid-yaml"),
        pytest.param(
            "receivers: {}\nreceivers: {}\n", "key written twice", id="duplicate-key"
        ),
        pytest.param("- just\n- a list\n", "not a mapping", id="not-a-mapping"),
    ],
)
def test_unreadable_yaml_is_a_finding_not_a_crash(
    tmp_path: Path, text: str, fragment: str
) -> None:
    """Broken YAML becomes an error finding with its line, not an exception."""
    config = tmp_path / "broken.yaml"
    config.write_text(text, encoding="utf-8")

    findings = check_config(config, SCHEMA_DIR, check_deployment=False)

    assert any(fragment in f.message and f.severity == ERROR for f in findings)


# -- schema folder ------------------------------------------------------------


def test_without_schema_folder_the_other_checks_run_and_say_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No schema folder: a note names the places and the fix, rules still apply."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(DATA / "memory_limiter_last.yaml", tmp_path / "config.yaml")

    findings = check_config(tmp_path / "config.yaml")

    note = find(findings, INFO, "(schema)", "looked in")
    assert str(tmp_path / "shared" / "collector-schema") in note.message
    assert "--schema-dir" in note.fix and collector_config.SCHEMA_DIR_ENV in note.fix
    find(
        findings,
        ERROR,
        "service.pipelines.logs.processors[1]",
        "memory_limiter is at position 2",
    )


def test_schema_folder_is_found_by_option_then_variable_then_parents(
    tmp_path: Path,
) -> None:
    """--schema-dir wins over the variable, which wins over the walk upwards."""
    for name in ("option", "variable", "shared/collector-schema"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "components.yaml").write_text("{}\n", encoding="utf-8")
    config = tmp_path / "repo" / "otel-collector.yaml"
    config.parent.mkdir()
    config.write_text("{}\n", encoding="utf-8")
    variable = {collector_config.SCHEMA_DIR_ENV: str(tmp_path / "variable")}

    by_option, _ = find_schema_dir(config, tmp_path / "option", environ=variable)
    by_variable, _ = find_schema_dir(config, None, environ=variable)
    by_walk, _ = find_schema_dir(config, None, environ={}, cwd=tmp_path)

    assert by_option == tmp_path / "option"
    assert by_variable == tmp_path / "variable"
    assert by_walk == tmp_path / "shared" / "collector-schema"


# -- command line -------------------------------------------------------------


def _main(*argv: str) -> int:
    return collector_config.main(list(argv))


@needs_schema
@pytest.mark.parametrize(
    ("argv", "status"),
    [
        pytest.param([str(ROOT_CONFIG)], 0, id="clean-config"),
        pytest.param([str(DATA / "misspelt_key.yaml")], 1, id="findings"),
        pytest.param([str(DATA / "absent.yaml")], 2, id="missing-file"),
        pytest.param(
            [str(ROOT_CONFIG), "--schema-dir", str(DATA)], 2, id="bad-schema-dir"
        ),
    ],
)
def test_command_exit_status(argv: list[str], status: int) -> None:
    """0 when clean, 1 with findings, 2 when a file or the schema folder is wrong."""
    args = argv if "--schema-dir" in argv else [*argv, "--schema-dir", str(SCHEMA_DIR)]

    assert _main(*args) == status


@needs_schema
def test_command_prints_each_finding_with_its_fix_and_a_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Text output: file:line, severity, key path, message, fix line, summary."""
    _main(str(DATA / "misspelt_key.yaml"), "--schema-dir", str(SCHEMA_DIR))

    out = capsys.readouterr().out
    assert (
        "misspelt_key.yaml:13: error: receivers.otlp.protocols.grpc.max_recv_msg_size"
        in out
    )
    assert "    fix: rename it to `max_recv_msg_size_mib`" in out
    assert out.rstrip().endswith("1 errors, 0 warnings, 0 notes")


@needs_schema
def test_command_json_output_is_one_object_per_finding(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--format json prints one parseable object per finding."""
    status = _main(
        str(DATA / "literal_token.yaml"),
        "--schema-dir",
        str(SCHEMA_DIR),
        "--format",
        "json",
    )

    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert [item["where"] for item in objects] == [
        "exporters.otlp_http.headers.authorization"
    ]


# -- collector/ agrees with the config ----------------------------------------


def _copy_repository(tmp_path: Path) -> Path:
    shutil.copy(ROOT_CONFIG, tmp_path / "otel-collector.yaml")
    shutil.copytree(DEPLOYMENT, tmp_path / "collector")
    return tmp_path


def _edit(relative: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / relative
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {relative}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    return edit


@needs_schema
@pytest.mark.parametrize(
    ("edit", "file", "fragment"),
    [
        pytest.param(
            _edit(
                "collector/docker-compose.yaml", "contrib:0.159.0", "contrib:0.158.0"
            ),
            "collector/docker-compose.yaml",
            "names otelcol-contrib 0.158.0, but the config is pinned to 0.159.0",
            id="compose-image-version",
        ),
        pytest.param(
            _edit("collector/.env.example", "OTELCOL_TRACES_TOKEN=", "TRACES_TOKEN="),
            "collector/.env.example",
            "reads ${env:OTELCOL_TRACES_TOKEN} but .env.example does not list it",
            id="env-example-missing-variable",
        ),
        pytest.param(
            _edit("collector/k8s/deployment.yaml", "port: health\n", "port: 8080\n"),
            "collector/k8s/deployment.yaml",
            "probes port 8080, but health_check listens on 13133",
            id="probe-port",
        ),
        pytest.param(
            _edit(
                "collector/k8s/deployment.yaml",
                "mountPath: /var/lib/otelcol/file_storage",
                "mountPath: /queue",
            ),
            "collector/k8s/deployment.yaml",
            "queue directory /var/lib/otelcol/file_storage is not a volume",
            id="queue-volume-path",
        ),
        pytest.param(
            _edit("collector/k8s/service.yaml", "targetPort: 4318", "targetPort: 8318"),
            "collector/k8s/service.yaml",
            "no Service port reaches 4318",
            id="service-port",
        ),
        pytest.param(
            _edit("collector/k8s/collector.env", "OTELCOL_TRACES_ENDPOINT", "ENDPOINT"),
            "collector/k8s/deployment.yaml",
            "reads ${env:OTELCOL_TRACES_ENDPOINT} (no default) but the Deployment",
            id="kubernetes-missing-variable",
        ),
        pytest.param(
            _edit(
                "collector/k8s/kustomization.yaml",
                "config.yaml=../../otel-collector.yaml",
                "config.yaml=other.yaml",
            ),
            "collector/k8s/kustomization.yaml",
            "no ConfigMap is generated from the root config",
            id="configmap-not-from-root-config",
        ),
        pytest.param(
            _edit(
                "collector/systemd/otelcol-contrib.service",
                "StateDirectory=otelcol/file_storage",
                "StateDirectory=otelcol",
            ),
            "collector/systemd/otelcol-contrib.service",
            "not a state directory of the unit",
            id="systemd-state-directory",
        ),
        pytest.param(
            _edit(
                "collector/systemd/otelcol-contrib.env",
                "OTELCOL_INGEST_TOKEN=change-me\n",
                "",
            ),
            "collector/systemd/otelcol-contrib.service",
            "reads ${env:OTELCOL_INGEST_TOKEN} (no default) but neither the unit",
            id="systemd-missing-variable",
        ),
        pytest.param(
            _edit(
                "collector/.env.example",
                "OTELCOL_TRACES_TOKEN=change-me",
                "OTELCOL_TRACES_TOKEN=4f9d2c81e7a6",
            ),
            "collector/.env.example",
            "looks like a real secret",
            id="real-secret-in-example",
        ),
        pytest.param(
            _edit(
                "collector/otel-collector.dev.yaml",
                "exporters: [debug]",
                "exporters: [debugg]",
            ),
            "collector/otel-collector.dev.yaml",
            "`debugg` is not defined",
            id="dev-overlay-undefined-exporter",
        ),
    ],
)
def test_deployment_folder_disagreeing_with_config_is_reported(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    edit: Callable[[Path], None],
    file: str,
    fragment: str,
) -> None:
    """A change in collector/ that contradicts the config is named with its file."""
    root = _copy_repository(tmp_path)
    edit(root)
    monkeypatch.chdir(root)

    findings = check_config(root / "otel-collector.yaml", SCHEMA_DIR)

    matching = [f for f in findings if f.file == file and fragment in f.message]
    assert matching, "\n".join(f.format() for f in findings)
    assert all(f.fails and f.fix for f in matching)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_puts_the_root_config_into_the_configmap() -> None:
    """kubectl kustomize builds collector/k8s with the root config as config.yaml."""
    result = subprocess.run(
        [
            "kubectl",
            "kustomize",
            "--load-restrictor",
            "LoadRestrictionsNone",
            str(DEPLOYMENT / "k8s"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    resources = list(yaml.safe_load_all(result.stdout))
    config_maps = [
        item
        for item in resources
        if item["kind"] == "ConfigMap"
        and item["metadata"]["name"].startswith("otel-collector-config")
    ]
    assert len(config_maps) == 1
    assert config_maps[0]["data"]["config.yaml"] == ROOT_CONFIG.read_text(
        encoding="utf-8"
    )
    kinds = sorted(item["kind"] for item in resources)
    assert kinds == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Service",
    ]
