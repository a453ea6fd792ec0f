"""Airflow DAG: nightly call-transcript summaries on Bedrock batch.

Everything about it is declared in include/pipelines/summarize_calls.yaml.
"""

from bedrock_batch.config import PIPELINES_DIR, load_pipeline
from bedrock_batch.dag_factory import build_pipeline_dag

dag = build_pipeline_dag(load_pipeline(PIPELINES_DIR / "summarize_calls.yaml"))
