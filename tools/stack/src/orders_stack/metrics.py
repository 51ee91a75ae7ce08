"""Reading one value from a service's `/metrics` (Prometheus text), for tests and the bench."""

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["metric_value"]


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of the sample `name` (with exactly `labels`, if given) in a scrape's text."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels is None or sample.labels == labels):
                return float(sample.value)
    raise KeyError(f"{name} {labels or ''} not in the metrics")
