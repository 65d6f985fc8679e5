"""FastAPI's OpenTelemetry stays inside the ledger unless the operator opts in.

Each run is a fresh interpreter: OpenTelemetry's global providers are set once per
process, as an agent (opentelemetry-instrument, say) would set them before the app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SECRET_CASE = "C-SECRET-7"

RUN = """
import base64, json, sys
from pathlib import Path
from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

spans, reader, logs = InMemorySpanExporter(), InMemoryMetricReader(), InMemoryLogRecordExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(tracer_provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
logger_provider = LoggerProvider()
logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
_logs.set_logger_provider(logger_provider)

from fastapi.testclient import TestClient
import api.app
from api.settings import Settings
from ledger.canonical import canonical
from ledger.core import Ledger
from ledger.keys import load_key_file
from ledger.refs import pseudonym

tmp, mode, case = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "fastapi-default":  # what FastAPI does left to itself
    api.app.telemetry = lambda _mode: {}
ledger = Ledger.open(f"sqlite:///{tmp / 'l.db'}", tmp / "keys")
ledger.init("telemetry.test/log")
_, path = ledger.register_agency("police-a", "police", borough="Lambeth")
signer = load_key_file(path)
agency = ledger.tokens.issue("agency:police-a", "agency", "police-a")
panel = ledger.tokens.issue("panel-1", "panel")
auditor = ledger.tokens.issue("auditor-1", "auditor")
ledger.close()
body = {
    "v": 1, "case_id": case, "event_id": "tel-1", "type": "CHILD_SEEN",
    "occurred_at": "2024-03-03T14:05:00Z", "agency": "police-a", "actor": {"role": "officer"},
    "payload": {"child_ref": pseudonym("child", "telemetry child", b"k")}, "responds_to": [], "corrects": None,
    "key_id": signer.key_id,
}
event = {"body": body, "sig": base64.b64encode(signer.sign_body(canonical(body))).decode()}
settings = Settings(
    db=f"sqlite:///{tmp / 'l.db'}", keys=tmp / "keys", integrate_every_s=0, sweep_every_s=0,
    telemetry="off" if mode == "fastapi-default" else mode,
)
statuses = []
with TestClient(api.app.create_app(settings), raise_server_exceptions=False) as client:
    a, p = {"Authorization": "Bearer " + agency}, {"Authorization": "Bearer " + panel}
    statuses.append(client.post(f"/v1/cases/{case}/events", json=event, headers=a).status_code)
    statuses.append(client.get(f"/v1/cases/{case}/events?limit=5", headers=p).status_code)
    bad = {"body": {**body, "event_id": "tel-2", "type": case + "-NOT-A-TYPE"}, "sig": "AA=="}
    statuses.append(client.post(f"/v1/cases/{case}/events", json=bad, headers=a).status_code)
    # Refused by FastAPI's own validation, which its telemetry logs, message and all.
    q = {"Authorization": "Bearer " + auditor}
    statuses.append(client.get(f"/v1/log/proof/inclusion?index={case}", headers=q).status_code)
tracer_provider.force_flush()
metered = reader.get_metrics_data()  # None where nothing was metered
points = [
    dict(point.attributes)
    for rm in (metered.resource_metrics if metered else [])
    for sm in rm.scope_metrics
    for metric in sm.metrics
    for point in metric.data.data_points
]
print(json.dumps({
    "statuses": statuses,
    "spans": [{"name": s.name, **dict(s.attributes)} for s in spans.get_finished_spans()],
    "metrics": points,
    "logs": [
        {"body": str(r.log_record.body), **{k: str(v) for k, v in (r.log_record.attributes or {}).items()}}
        for r in logs.get_finished_logs()
    ],
}))
"""


def recorded(tmp_path: Path, mode: str, **env: str) -> dict[str, Any]:
    # Nothing of this environment's own telemetry or ledger settings: only `env`.
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "FASTAPI_OTEL_", "LEDGER_"))
    }
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path), mode, SECRET_CASE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
        env={**clean, **env},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["statuses"] == [201, 200, 422, 422], data["statuses"]
    return data


def test_fastapi_left_to_itself_reports_case_ids_to_the_process_provider(
    tmp_path: Path,
) -> None:
    # The exposure the ledger's setting closes: without it, an agent's provider gets
    # each request's path, and with it the case id.
    data = recorded(tmp_path, "fastapi-default")
    assert any(SECRET_CASE in json.dumps(span) for span in data["spans"])
    assert data["logs"], data  # what a validation failure was sent


@pytest.mark.parametrize("auto", [None, "true"])
def test_telemetry_is_off_by_default(tmp_path: Path, auto: str | None) -> None:
    # FASTAPI_OTEL_AUTO_CONFIGURE asks FastAPI to add exporters: off stays off.
    data = recorded(
        tmp_path, "off", **({} if auto is None else {"FASTAPI_OTEL_AUTO_CONFIGURE": auto})
    )
    assert data["spans"] == []
    assert data["metrics"] == []
    assert data["logs"] == []


def test_metrics_name_routes_never_cases(tmp_path: Path) -> None:
    data = recorded(tmp_path, "metrics")
    assert data["spans"] == []
    assert data["logs"] == []
    appended = [p for p in data["metrics"] if p.get("http.response.status_code") == 201]
    # The single append is metered under its route too (it takes the route's path).
    assert appended, data["metrics"]
    assert {p.get("http.route") for p in appended} == {"/v1/cases/{case_id}/events"}
    assert SECRET_CASE not in json.dumps(data["metrics"])


@pytest.mark.parametrize("value", ["traces", "on", ""])
def test_unknown_telemetry_setting_is_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.settings import BadSetting, settings_from_env

    monkeypatch.setenv("LEDGER_TELEMETRY", value)
    with pytest.raises(BadSetting, match="LEDGER_TELEMETRY"):
        settings_from_env()
