"""Parses OpenMetrics text (stdin) with the official Prometheus client's parser
and prints every sample as JSON: [{"name", "labels", "value"}]. A parse error
exits non-zero with the parser's message."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"family": family.name, "type": family.type, "name": s.name, "labels": s.labels, "value": s.value})
json.dump(samples, sys.stdout)
