"""Parses the service's /metrics output with prometheus-client, the reference
Python implementation, and checks it follows Prometheus naming conventions.

Usage: python metrics_check.py PROMETHEUS_TEXT_FILE OPENMETRICS_FILE NAME...
The NAMEs are families that must be present. Prints one line per problem and
exits 1 if there is any.
"""

import math
import re
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
# Units other than the base ones (seconds, bytes, ratios) are not used.
NON_BASE_UNITS = re.compile(
    r"_(ms|msec|millis|milliseconds|us|usec|microseconds|ns|nanoseconds|"
    r"minutes|hours|days|kb|kilobytes|mb|megabytes|gb|gigabytes|percent|pct)(_|$)"
)
TIME_WORDS = re.compile(r"(duration|latency|elapsed|_time)(_|$)")


def check_family(family, problems, fmt):
    name = family.name
    where = f"{fmt} {name}"
    if not SNAKE.match(name):
        problems.append(f"{where}: name is not snake_case")
    if NON_BASE_UNITS.search(name):
        problems.append(f"{where}: name carries a non-base unit")
    if TIME_WORDS.search(name) and "_seconds" not in name:
        problems.append(f"{where}: a time is measured in seconds and named so")
    if not family.documentation:
        problems.append(f"{where}: no HELP text")
    if family.type in ("unknown", "untyped"):
        problems.append(f"{where}: no TYPE")
    if family.type != "counter" and name.endswith("_total"):
        problems.append(f"{where}: only counters end in _total")
    if family.type == "counter" and name.endswith("_total"):
        problems.append(f"{where}: the parser kept _total in a counter's family name")
    if not family.samples and family.type != "histogram":
        problems.append(f"{where}: no samples")
    for sample in family.samples:
        for label in sample.labels:
            if not SNAKE.match(label) and label != "le":
                problems.append(f"{where}: label {label!r} is not snake_case")
        if family.type == "counter" and not sample.name.endswith(("_total", "_created")):
            problems.append(f"{where}: counter sample {sample.name} lacks _total")
        if family.type == "counter" and sample.name.endswith("_total") and sample.value < 0:
            problems.append(f"{where}: negative counter")
    if family.type == "histogram":
        check_histogram(family, problems, where)


def check_histogram(family, problems, where):
    series = {}
    for sample in family.samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        key = tuple(sorted(labels.items()))
        entry = series.setdefault(key, {"buckets": [], "count": None, "sum": None})
        if sample.name.endswith("_bucket"):
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            entry["count"] = sample.value
        elif sample.name.endswith("_sum"):
            entry["sum"] = sample.value
    if not family.name.endswith("_seconds") and not family.name.endswith("_bytes"):
        problems.append(f"{where}: a histogram's name ends in its unit")
    for key, entry in series.items():
        buckets = sorted(entry["buckets"])
        if not buckets or not math.isinf(buckets[-1][0]):
            problems.append(f"{where}{dict(key)}: no +Inf bucket")
            continue
        counts = [count for _, count in buckets]
        if counts != sorted(counts):
            problems.append(f"{where}{dict(key)}: buckets are not cumulative")
        if entry["count"] != buckets[-1][1]:
            problems.append(f"{where}{dict(key)}: _count differs from the +Inf bucket")
        if entry["sum"] is None:
            problems.append(f"{where}{dict(key)}: no _sum")


def main():
    text_path, openmetrics_path, *required = sys.argv[1:]
    problems = []
    with open(text_path, encoding="utf-8") as f:
        text = list(parse_text(f.read()))
    with open(openmetrics_path, encoding="utf-8") as f:
        openmetrics = list(parse_openmetrics(f.read()))
    for family in text:
        check_family(family, problems, "prometheus")
    for family in openmetrics:
        check_family(family, problems, "openmetrics")
        if family.unit and not family.name.endswith("_" + family.unit):
            problems.append(f"openmetrics {family.name}: unit {family.unit} is not its suffix")
    text_names = {(f.name, f.type) for f in text}
    openmetrics_names = {(f.name, f.type) for f in openmetrics}
    if text_names != openmetrics_names:
        problems.append(
            "the two formats expose different families: "
            f"{sorted(text_names ^ openmetrics_names)}"
        )
    for name in required:
        if name not in {f.name for f in text}:
            problems.append(f"missing family {name}")
    for problem in problems:
        print(problem)
    print(f"checked {len(text)} families in each format", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
