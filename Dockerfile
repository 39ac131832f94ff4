# pushworker container: build on Debian 12, run on slim Debian 12 with only the runtime libraries.
#   docker build -t pushworker .
#   docker run -e DATABASE_URL=... -e PUBSUB_AUDIENCE=... -p 8080:8080 pushworker
# Migrations: run the same image with the `migrate` argument (a Cloud Run job), before deploying.

FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config git ca-certificates \
      libh2o-evloop-dev libjson-c-dev libpq-dev libssl-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Makefile ./
COPY proto proto
COPY worker worker
COPY migrations migrations
COPY scripts/embed-sql scripts/embed-sql
RUN make build/worker VERSION=container && strip build/worker

FROM debian:12-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libh2o-evloop0.13 libjson-c5 libpq5 libssl3 libcurl4 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home pushworker
COPY --from=build /src/build/worker /usr/local/bin/worker
USER 10001
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/worker"]
CMD ["serve"]
