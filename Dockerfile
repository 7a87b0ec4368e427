# scicat-ingestor container image.
#
#   docker build -t scicat-ingestor .
#   docker run --rm -p 8080:8080 \
#     -v /etc/scicat-ingestor:/config:ro -v /etc/scicat-ingestor/schemas:/schemas:ro \
#     -v /data:/data --env-file secrets.env --stop-timeout 60 scicat-ingestor
#
# /config/config.yml is the configuration; the default `ingestion.schemas_directory: schemas`
# resolves to the mounted /schemas. Secrets come from the environment (SCICAT_TOKEN, ...).
# The health endpoint binds 0.0.0.0 inside the container (host default is 127.0.0.1).
# Give `docker stop` (--stop-timeout, compose `stop_grace_period`) more time than
# ingestion.drain_grace_period: SIGTERM drains in-flight files, then commits and exits 0.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# confluent-kafka and h5py ship manylinux wheels: no compiler or system libraries needed.
WORKDIR /src
COPY setup.py setup.cfg README.md ./
COPY scicat_ingestor ./scicat_ingestor
RUN pip install . && rm -rf /src

RUN groupadd --system --gid 10001 ingestor \
    && useradd --system --uid 10001 --gid ingestor --home-dir /app --shell /usr/sbin/nologin ingestor \
    && mkdir -p /app /config /schemas \
    && ln -s /schemas /app/schemas \
    && chown ingestor:ingestor /app

# The working directory holds relative paths: the schemas link and a file log, if enabled.
WORKDIR /app
USER ingestor:ingestor
VOLUME ["/config", "/schemas"]
EXPOSE 8080
STOPSIGNAL SIGTERM

# Liveness only (/health): a SciCat or storage outage shows on /ready and must not restart us.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=5).status == 200 else 1)"]

# Exec form: the Python process is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["python", "-m", "scicat_ingestor"]
CMD ["run", "-c", "/config/config.yml", "--health-check.host", "0.0.0.0"]
