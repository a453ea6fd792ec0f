# Extends the official Airflow image, as https://airflow.apache.org/docs/docker-stack/build.html
# recommends: pinned requirements installed as the airflow user, nothing rebuilt from source.
# The Python minor version of the tag must match pyproject.toml (requires-python 3.11): the
# requirements are resolved for it.
FROM apache/airflow:3.3.2-python3.11

# Named volumes copy the ownership of the image's mount point, so the stand-in's state
# directory must exist and belong to the airflow user (uid 50000, group 0) before first use.
USER root
RUN mkdir -p /state && chown airflow:0 /state
USER airflow

# Installing apache-airflow at the image's own version alongside the requirements stops pip
# from ever moving Airflow itself; requirements.txt pins the same version (checked by a test).
COPY --chown=airflow:0 requirements.txt /requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt

# The offline stand-in for S3 + Bedrock, run by the local-aws service with
# `python -m local_aws` from /opt/airflow. Airflow's own processes never import it.
COPY --chown=airflow:0 local_aws/ /opt/airflow/local_aws/

# Baked-in copies make the image deployable on its own; docker-compose.yaml bind-mounts the
# working tree over them for development.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
