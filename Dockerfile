# pushworker container: built on Debian 12, run on Debian 12 slim with only the shared libraries
# the binary links (checked by tests/scripts/deploy_test against `ldd build/worker`).
#
#   docker build --build-arg VERSION="$(git describe --always --dirty)" -t pushworker .
#   gcloud builds submit --tag REGION-docker.pkg.dev/PROJECT/REPOSITORY/pushworker:TAG .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e PUBSUB_AUDIENCE=... pushworker
#
# The image runs `worker serve` by default. Migrations: run the same image with the argument
# `migrate` before deploying a new version, on Cloud Run as a job:
#   gcloud run jobs deploy pushworker-migrate --image IMAGE --args=migrate \
#     --set-secrets=DATABASE_URL=SECRET:VERSION --set-cloudsql-instances=PROJECT:REGION:INSTANCE \
#     --service-account=RUNTIME_SA --max-retries=3 --region=REGION
#   gcloud run jobs execute pushworker-migrate --region=REGION --wait
# (scripts/gcp-setup does both; `migrate` takes an advisory lock and applies only what is missing,
# so running it again is harmless). Locally: docker run --rm -e DATABASE_URL=... pushworker migrate
#
# The worker is PID 1: it blocks SIGTERM and waits for it with sigwait, so it receives Cloud Run's
# SIGTERM without an init process, stops accepting and lets in-flight pushes commit (within
# PUSH_DEADLINE_MS, under the 10 s Cloud Run gives before SIGKILL).

# ---- build stage -------------------------------------------------------------------------------
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config \
      libh2o-evloop-dev libjson-c-dev libpq-dev libssl-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what `make build/worker` reads (the migrations' SQL is compiled into the binary).
COPY Makefile ./
COPY proto proto
COPY worker worker
COPY migrations migrations
COPY scripts/embed-sql scripts/embed-sql
# There is no .git in the build context: the version comes from the build argument.
ARG VERSION=container
RUN make -j"$(nproc)" build/worker VERSION="$VERSION" \
 && strip build/worker \
 && build/worker --version

# ---- runtime stage -----------------------------------------------------------------------------
FROM debian:12-slim
# The libraries the binary links directly (readelf -d: NEEDED), by Debian package:
#   libh2o-evloop.so.0.13 libh2o-evloop0.13   libjson-c.so.5 libjson-c5   libpq.so.5 libpq5
#   libssl.so.3, libcrypto.so.3 libssl3       libcurl.so.4 libcurl4       libc.so.6 libc6 (in slim)
# apt brings in what those need (ldd: libwslay1 zlib1g via libh2o; libgssapi-krb5-2 libldap-2.5-0
# via libpq5; libnghttp2-14 libpsl5 librtmp1 libssh2-1 libbrotli1 libidn2-0 libzstd1 via libcurl4).
# ca-certificates: libcurl verifies https://www.googleapis.com (signing keys) against them.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libh2o-evloop0.13 libjson-c5 libpq5 libssl3 libcurl4 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pushworker \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin pushworker
COPY --from=build /src/build/worker /usr/local/bin/worker
# Fails the build if a library is missing (prints the usage; touches no database or network).
RUN /usr/local/bin/worker --help >/dev/null
USER 10001:10001
# Cloud Run sets PORT itself; this default is for `docker run`.
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/worker"]
CMD ["serve"]
