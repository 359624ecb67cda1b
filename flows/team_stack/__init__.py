"""The team stack: PostgreSQL, an MLflow tracking server and a Prefect server on it, under one folder.

``stack`` starts, reports and stops the three; ``postgres`` is the database cluster, ``servers`` how the
two servers are started, ``processes`` the detached processes and their records.
"""
