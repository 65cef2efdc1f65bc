"""Decodes OTLP/HTTP protobuf trace export requests with the official
opentelemetry-proto messages and prints their spans as JSON.

Arguments: files, each one request body as POSTed to /v1/traces.
Output: [{"resource": {...}, "scope": {...}, "name", "kind", "trace_id", "span_id", "parent_span_id" (hex, "" for none), "flags",
"start", "end" (Unix ns), "status": {"code", "message"}, "attributes":
{key: value}}]. A body that does not decode exits non-zero."""

import json
import sys

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


spans = []
for path in sys.argv[1:]:
    request = ExportTraceServiceRequest()
    with open(path, "rb") as body:
        request.ParseFromString(body.read())
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = {"name": scope_spans.scope.name, "version": scope_spans.scope.version}
            for span in scope_spans.spans:
                spans.append({
                    "resource": resource,
                    "scope": scope,
                    "name": span.name,
                    "kind": Span.SpanKind.Name(span.kind),
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "flags": span.flags,
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                    "status": {"code": Status.StatusCode.Name(span.status.code), "message": span.status.message},
                    "attributes": attributes(span.attributes),
                })
json.dump(spans, sys.stdout)
