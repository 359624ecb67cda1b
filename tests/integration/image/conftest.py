from tests.fixtures.docker_engine import docker_client, local_base_image  # noqa: F401  (session fixtures)
