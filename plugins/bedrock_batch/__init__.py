"""Amazon Bedrock batch inference for Airflow: the library behind the project's DAGs."""
