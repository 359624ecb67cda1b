from tests.fixtures.docker_engine import docker_client, image_home, local_base_image  # noqa: F401  (session fixtures)
