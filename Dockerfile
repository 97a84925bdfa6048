# Airflow image with Touchpoint installed: used by docker-compose.yml.
FROM apache/airflow:3.3.2-python3.11

USER root
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
USER airflow

COPY --chown=airflow:root . /opt/touchpoint
WORKDIR /opt/touchpoint
RUN pip install --no-cache-dir -c constraints.txt -e .
