# amid, the AMI event daemon, as a container (ECS: deploy/ecs/task-definition.json).
#   docker build -t amid .
#   docker run -v ./amid.yaml:/etc/amid/amid.yaml:ro -p 9102:9102 amid
# The image ships no config: mount one at /etc/amid/amid.yaml or build FROM this image
# and COPY it there; secrets come from the environment (${SLACK_WEBHOOK_URL}, ...).

# --- build: a wheel of amid, installed with its pinned dependencies into a venv ----------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CONSTRAINT=/src/constraints.txt
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
# The pinned dependencies first, in their own layer: a change to amid's code reuses it.
RUN python -m venv /opt/amid \
 && python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
 && /opt/amid/bin/pip install --no-cache-dir -c constraints.txt -r requirements.txt
COPY amid ./amid
# PIP_CONSTRAINT pins the build backend (hatchling) as well as the runtime dependencies.
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/amid/bin/pip install --no-cache-dir --no-deps /wheels/amid-*.whl \
 && /opt/amid/bin/amid --version

# --- runtime: the venv alone, run by an unprivileged user ---------------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 amid \
 && useradd --system --uid 10001 --gid amid --no-create-home \
        --home-dir /var/lib/amid --shell /usr/sbin/nologin amid \
 && install -d -o amid -g amid -m 0700 /var/lib/amid \
 && install -d -m 0755 /etc/amid
COPY --from=build /opt/amid /opt/amid
ENV PATH=/opt/amid/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AMID_CONFIG=/etc/amid/amid.yaml
USER 10001:10001
WORKDIR /var/lib/amid
# The sqlite dedupe store (dedupe.path: /var/lib/amid/dedupe.sqlite3).
VOLUME /var/lib/amid
# /metrics, /healthz, /readyz
EXPOSE 9102
# amid drains in-flight events within shutdown_timeout (20 s) on SIGTERM: give it
# `docker stop --time 30` / ECS stopTimeout 30.
STOPSIGNAL SIGTERM
# slim has no curl: ask /healthz with the Python that is there anyway.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9102/healthz', timeout=4)"]
ENTRYPOINT ["amid"]
CMD ["run", "-c", "/etc/amid/amid.yaml"]
