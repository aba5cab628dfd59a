"""Arize Phoenix as a query backend: its REST API, ``GET /v1/projects/{project}/spans``.

Phoenix keeps span attributes, not resource attributes; it groups spans by project, taken from the
resource attribute ``openinference.project.name``, which otel-rai sets to the service name. So a service
is a project: ``--service S`` reads project S, and a span read from a project has that project as its
service (except Phoenix's ``default`` project, where spans without a project land). Without a service,
``PHOENIX_PROJECT_NAME`` names the project to read, else every project is read. The model name and
version are sent as attribute filters; everything is checked again here. ``PHOENIX_API_KEY``, if set,
is sent as a bearer token. Phoenix keeps times to the microsecond.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any, Iterator

from otel_rai import semconv, settings
from otel_rai._time import parse_time, rfc3339
from otel_rai.codec.records import SpanRecord
from otel_rai.query import Query
from otel_rai.query._remote import Http, HttpError, lookback, time_order, unexpected

DEFAULT_URL = "http://localhost:6006"
#: Spans per page of Phoenix's REST API.
PAGE = 1000
#: Projects per page of its project list.
PROJECTS_PAGE = 100
#: The project of spans that name none: it says nothing about their service.
DEFAULT_PROJECT = "default"
_STATUS = {"UNSET": 0, "OK": 1, "ERROR": 2}


def record(span: dict[str, Any], project: str | None = None) -> SpanRecord:
    """One span of Phoenix's REST API as a record; its service is its `project` (see the module docstring)."""
    context = span["context"]
    service = project if project not in (None, DEFAULT_PROJECT) else None
    return SpanRecord(
        trace_id=context["trace_id"],
        span_id=context["span_id"],
        name=span.get("name", ""),
        start_ns=parse_time(span["start_time"]),
        end_ns=parse_time(span["end_time"]),
        attributes=dict(span.get("attributes") or {}),
        parent_span_id=span.get("parent_id"),
        status_code=_STATUS.get(span.get("status_code") or "UNSET", 0),
        status_message=span.get("status_message") or "",
        events=[
            {"name": e.get("name", ""), "time_ns": parse_time(e["timestamp"]),
             "attributes": e.get("attributes") or {}}
            for e in span.get("events") or ()
        ] or (),
        resource={semconv.SERVICE_NAME: service} if service else {},
    )


class Phoenix:
    """Phoenix's REST API at `url`, reading the spans of `project` (default: the query's service, else
    ``PHOENIX_PROJECT_NAME``, else every project)."""

    def __init__(self, url: str, project: str | None = None) -> None:
        key = settings.env("PHOENIX_API_KEY")
        self.http = Http(url, "phoenix", {"Authorization": f"Bearer {key}"} if key else None,
                         example=DEFAULT_URL)
        self.project = project or settings.env("PHOENIX_PROJECT_NAME")

    def projects(self) -> list[str]:
        """The names of every project of this Phoenix (all pages)."""
        names, cursor = [], None
        try:
            while True:
                page = self.http.get("/v1/projects", [("limit", str(PROJECTS_PAGE))]
                                     + ([("cursor", cursor)] if cursor else []))
                names += [str(p["name"]) for p in page.get("data") or ()]
                cursor = page.get("next_cursor")
                if not cursor:
                    return names
        except (KeyError, TypeError, AttributeError) as exc:
            raise unexpected("phoenix", exc) from None

    def spans(self, query: Query) -> Iterator[SpanRecord]:
        """The spans of the query's projects in the window, sorted by start time; none of an unknown project."""
        projects = [query.service] if query.service is not None else (
            [self.project] if self.project else self.projects())
        found: list[SpanRecord] = []
        for project in projects:
            found += self._project_spans(project, query)
        found.sort(key=time_order)
        yield from found

    def _project_spans(self, project: str, query: Query) -> list[SpanRecord]:
        start, end = lookback(query.start_ns, query.end_ns)
        params: list[tuple[str, str]] = [
            ("start_time", rfc3339(start // 1000 * 1000)),
            ("end_time", rfc3339(-(-end // 1000) * 1000)),
            ("sort", "start_time"),
            ("order", "asc"),
            ("limit", str(PAGE)),
        ]
        filters = ((semconv.MODEL_VERSION, query.model_version), (semconv.MODEL_NAME, query.model_name))
        for key, value in filters:
            if value is not None:  # JSON-quoted, so that "1.4" stays a string
                params.append(("attribute", f"{key}:{json.dumps(value)}"))
        path = f"/v1/projects/{urllib.parse.quote(project, safe='')}/spans"
        found, cursor = [], None
        try:
            while True:  # every page, then sorted: older Phoenix versions ignore sort=
                page = self.http.get(path, params + ([("cursor", cursor)] if cursor else []))
                found += [record(s, project) for s in page.get("data") or ()]
                cursor = page.get("next_cursor")
                if not cursor:
                    return found
        except HttpError as exc:
            if exc.status == 404:  # no such project: nothing recorded there
                return []
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise unexpected("phoenix", exc) from None


def connect(url: str | None) -> Phoenix:
    """The Phoenix at `url`, else at `DEFAULT_URL`."""
    return Phoenix(url or DEFAULT_URL)
