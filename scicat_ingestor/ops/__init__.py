"""Operations: health/readiness endpoint, status page, Prometheus metrics, logging, the service
state the health server reads, worker turns, exit codes. Below everything but ``config``."""
