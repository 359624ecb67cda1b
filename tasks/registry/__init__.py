"""Registry: the MLflow run and what it logs, model versions, their publication, promotion and lookup."""
