"""Operations: health/readiness endpoint, Prometheus metrics, logging sinks."""
