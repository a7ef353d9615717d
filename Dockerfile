# syntax=docker/dockerfile:1
# mlopsctl's pipelines on the official Airflow 3 image: the three DAGs + their Spark jobs + the
# runtime libraries the tasks import. Build: docker build -t mlopsctl-airflow:0.1.0 .
# Compute defaults to Databricks (no Spark/Java in the image). For the local / spark:// backend
# build with --build-arg INSTALL_SPARK=true (adds a headless JRE and pyspark with its Spark Connect
# client, ~700 MB). Tasks are then Spark Connect clients of MLOPSCTL_SPARK_REMOTE (sc://host:15002, a
# Connect server in front of your cluster) when it is set, and spark-submit to MLOPSCTL_SPARK_MASTER when not.
FROM apache/airflow:3.3.2-python3.11

ARG AIRFLOW_VERSION=3.3.2
ARG INSTALL_SPARK=false
ARG PYSPARK_VERSION=4.3.0

LABEL org.opencontainers.image.title="mlopsctl-airflow" \
      org.opencontainers.image.description="Airflow 3 with mlopsctl's build_model / grid_search DAGs" \
      org.opencontainers.image.licenses="Apache-2.0"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Java only for the optional local/spark:// backend. default-jre-headless (Java 17 on bookworm, 21 on
# trixie; pyspark 4 runs on both) is not version-pinned: the base image's Debian release pins it, and
# old point versions leave the mirror.
# The official image's users: root = 0, airflow = 50000 (numeric, so any runtime resolves them).
USER 0
# hadolint ignore=DL3008
RUN if [ "${INSTALL_SPARK}" = "true" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends default-jre-headless \
        && apt-get clean \
        && rm -rf /var/lib/apt/lists/*; \
    fi

USER 50000
# Pin apache-airflow to the base image's version so pip cannot up/downgrade it (the image docs' rule).
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        "apache-airflow-providers-databricks==7.23.0" \
        "apache-airflow-providers-standard==1.21.0" \
        "mlflow==3.17.2" \
        "scikit-learn==1.9.1" \
        "pandas==2.3.3" \
        "pyarrow==25.0.1" \
        "matplotlib==3.11.2" \
    && if [ "${INSTALL_SPARK}" = "true" ]; then \
        pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "pyspark[connect]==${PYSPARK_VERSION}"; \
    fi \
    && mkdir -p /opt/airflow/work

COPY --chown=50000:0 dags/ /opt/airflow/dags/
COPY --chown=50000:0 spark_jobs/ /opt/airflow/spark_jobs/

# Runtime settings the DAG tasks read at run time (override with -e / the deployment's env).
# No secret here: Databricks and MLflow credentials come from Airflow connections or the runtime env.
# Databricks experiments are workspace paths: the folder must be under /Shared or /Users (`mlopsctl deploy
# jobs` creates it). The node type (MLOPSCTL_DATABRICKS_NODE_TYPE_ID) and the Unity Catalog schema
# (MLOPSCTL_DATABRICKS_UC_SCHEMA) have no safe default: set them on the deployment.
ARG MLOPSCTL_COMPUTE=databricks
ARG MLOPSCTL_MLFLOW_TRACKING_URI=databricks
ARG MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX=/Shared/mlopsctl
ENV MLOPSCTL_COMPUTE=${MLOPSCTL_COMPUTE} \
    MLOPSCTL_MLFLOW_TRACKING_URI=${MLOPSCTL_MLFLOW_TRACKING_URI} \
    MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX=${MLOPSCTL_DATABRICKS_EXPERIMENT_PREFIX} \
    MLOPSCTL_SPARK_MASTER=local[*] \
    MLOPSCTL_SPARK_JOBS_DIR=/opt/airflow/spark_jobs \
    MLOPSCTL_WORK_DIR=/opt/airflow/work \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
