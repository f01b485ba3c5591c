# One image for the Dagster webserver, the Dagster daemon and the online scoring API; the command
# chooses the role (deploy/README.md). The default command is the API.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster_home

WORKDIR /opt/loyalty_assets
COPY pyproject.toml setup.py workspace.yaml ./
COPY loyalty_assets ./loyalty_assets
RUN pip install --no-cache-dir . \
    && mkdir -p "$DAGSTER_HOME" \
    && useradd --system --home-dir /opt/loyalty_assets loyalty \
    && chown loyalty "$DAGSTER_HOME"
COPY deploy/dagster.yaml /opt/dagster_home/dagster.yaml

USER loyalty
EXPOSE 8080 3000
# Health checks belong to each service's definition (the API's is GET /readyz), not to the image.
CMD ["loyalty-assets", "serve", "--host", "0.0.0.0", "--port", "8080"]
