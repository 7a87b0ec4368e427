# scicat-ingestor container image (docs/operator/docker.md: build, volumes, upgrade, what it contains).
#
#   make image                      # or: docker build -t scicat-ingestor .  (BuildKit)
#   docker run -d --stop-timeout 60 --env-file secrets.env -p 8080:8080 \
#     -v /etc/scicat-ingestor/config.yml:/config/config.yml:ro \
#     -v /etc/scicat-ingestor/schemas:/schemas:ro \
#     -v /data:/data:ro -v /srv/scicat-ingestor/ingestor:/ingestor scicat-ingestor
#
# Volumes: /config/config.yml (the configuration), /schemas (the default `schemas_directory:
# schemas` resolves to it), the data at the path the file-writer announces, and /ingestor, where
# the default `ingestor_files_directory: ../ingestor` puts the side files of a file directly in
# /data (writable by uid 10001). Secrets come from the environment (SCICAT_TOKEN, ...).
# The health endpoint binds 0.0.0.0 inside the container (host default is 127.0.0.1); the
# HEALTHCHECK reads the URL the daemon's health endpoint bound from /tmp/scicat-ingestor-health.url.
# Give `docker stop` (--stop-timeout, compose `stop_grace_period`) more time than
# ingestion.drain_grace_period: SIGTERM drains in-flight files, then commits and exits 0.
# Behind a TLS-inspecting proxy pip needs the proxy's CA: pass a CA bundle as a BuildKit secret,
#   docker build --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt .
# (make image does so by itself); it is mounted for pip only and stays out of every layer.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
# The version from git (docker/build.sh passes it): the build context has no .git for setuptools-scm.
ARG VERSION=0.0.0+unknown
LABEL org.opencontainers.image.title="scicat-ingestor" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="BSD-3-Clause" \
      org.opencontainers.image.description="Kafka-driven NeXus/HDF5 metadata ingestor for the SciCat data catalogue"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# confluent-kafka and h5py ship manylinux wheels: no compiler or system libraries needed.
WORKDIR /src
COPY pyproject.toml setup.py setup.cfg README.md LICENSE ./
COPY scicat_ingestor ./scicat_ingestor
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && SETUPTOOLS_SCM_PRETEND_VERSION="${VERSION}" pip install . && rm -rf /src

RUN groupadd --system --gid 10001 ingestor \
    && useradd --system --uid 10001 --gid ingestor --home-dir /app --shell /usr/sbin/nologin ingestor \
    && mkdir -p /app /config /schemas /ingestor \
    && ln -s /schemas /app/schemas \
    && chown ingestor:ingestor /app /ingestor

# The working directory holds relative paths: the schemas link and a file log, if enabled.
WORKDIR /app
USER ingestor:ingestor
VOLUME ["/config", "/schemas", "/ingestor"]
EXPOSE 8080
STOPSIGNAL SIGTERM

# Liveness only (/health): a SciCat or storage outage shows on /ready and must not restart us.
# The probe reads the URL the daemon bound from /tmp/scicat-ingestor-health.url (docs/operator/docker.md).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "scicat_ingestor.ops.probe"]

# Exec form: the Python process is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["python", "-m", "scicat_ingestor"]
CMD ["run", "-c", "/config/config.yml", "--health-check.host", "0.0.0.0"]
