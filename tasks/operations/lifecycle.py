"""Deleting in dependency order: a service, then the image it runs, then the model version it was built from.

Something still in use is not deleted: a model version whose service or image exists, an image a service
runs. ``cascade`` deletes those users first instead. A deletion is a list of :class:`Step` run in that order,
each removing one whole thing, so a failure leaves everything not yet reached intact and usable (a version
without its service, never a service without its version) and running the command again finishes it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fpgaflow.tasks.deployment import services
from fpgaflow.tasks.errors import PipelineStepError
from fpgaflow.tasks.packaging import images
from fpgaflow.tasks.packaging.docker_engine import EngineUnreachable
from fpgaflow.tasks.registry import catalog
from fpgaflow.tasks.registry.client import mlflow_client
from fpgaflow.tasks.settings import PipelineSettings, get_pipeline_settings


class DeletionRefused(PipelineStepError):
    """The thing to delete is still used by something else; nothing was deleted."""


class DeletionIncomplete(PipelineStepError):
    """A step of a deletion failed: the steps before it are done, the rest (that step included) is intact."""


@dataclass(frozen=True)
class Step:
    what: str
    run: Callable[[], object]


@dataclass
class Deletion:
    """What one delete command removes, in order, and what it could not check."""

    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def carry_out(self) -> dict[str, Any]:
        done: list[str] = []
        for index, step in enumerate(self.steps):
            try:
                step.run()
            except Exception as error:
                left = [later.what for later in self.steps[index:]]
                raise DeletionIncomplete(
                    f"deleting {step.what} failed: {str(error) or type(error).__name__}. "
                    f"Deleted: {', '.join(done) or 'nothing'}; "
                    f"still there and intact: {', '.join(left)}. Run the command again to finish"
                ) from error
            done.append(step.what)
        return {"deleted": done, "notes": self.notes}


def _service_step(name: str, settings: PipelineSettings) -> Step:
    return Step(f"service {name}", lambda: services.delete_service(name, settings))


def _image_step(image: images.ServingImage, settings: PipelineSettings) -> Step:
    return Step(f"image {image.reference}", lambda: images.remove_image(image, settings))


def _refuse(what: str, users: Sequence[str], cascade_hint: str) -> None:
    if users:
        raise DeletionRefused(f"{what} is still used by {'; '.join(users)}. Delete those first, or {cascade_hint}")


def _engine_images(settings: PipelineSettings) -> tuple[list[images.ServingImage], list[str]]:
    """The engine's serving images, or none and a note when no engine answers (then none can depend on anything)."""
    try:
        return images.list_images(settings), []
    except EngineUnreachable as error:
        return [], [f"images not checked: {error}"]


def plan_service_deletion(name: str, settings: PipelineSettings | None = None) -> Deletion:
    settings = settings or get_pipeline_settings()
    if name not in services.saved_placements(settings):
        services.get_service(name, settings)  # the error naming the services there are
    return Deletion([_service_step(name, settings)])


def plan_image_deletion(reference: str, cascade: bool = False, settings: PipelineSettings | None = None) -> Deletion:
    settings = settings or get_pipeline_settings()
    image = images.find_image(images.list_images(settings), reference)
    users = [
        name
        for name, placement in sorted(services.saved_placements(settings).items())
        if services.images_of(placement) & image.names()
    ]
    if not cascade:
        _refuse(
            f"image {image.reference}",
            [f"service {name} (`fpgaflow services delete {name}`)" for name in users],
            f"pass --cascade to delete them with it: {', '.join(f'service {name}' for name in users)}",
        )
    return Deletion([*(_service_step(name, settings) for name in users), _image_step(image, settings)])


def plan_model_deletion(reference: str, cascade: bool = False, settings: PipelineSettings | None = None) -> Deletion:
    """Delete a model version (``NAME`` alone: its newest): its service and image first when ``cascade``."""
    settings = settings or get_pipeline_settings()
    client = mlflow_client(settings)
    model_version = catalog.find_version(client, catalog.VersionReference.parse(reference))
    name, version = model_version.name, str(model_version.version)
    placement = services.saved_placements(settings).get(name)
    service_users = [name] if placement is not None and services.serves_version(placement, version) else []
    engine_images, notes = _engine_images(settings)
    image_users = [image for image in engine_images if (image.model, image.version) == (name, version)]
    if not cascade:
        _refuse(
            f"{name} version {version}",
            [f"service {user} on the cluster (`fpgaflow services delete {user}`)" for user in service_users]
            + [f"image {image.reference} (`fpgaflow images delete {image.reference}`)" for image in image_users],
            "pass --cascade to delete them with it, in that order",
        )
    dirs = catalog.local_service_dirs(model_version, settings)

    def delete_version() -> None:
        for directory in dirs:  # copies of the run's service artifacts: the registry entry stays usable without them
            shutil.rmtree(directory)
        catalog.delete_version(client, name, version)

    return Deletion(
        [
            *(_service_step(user, settings) for user in service_users),
            *(_image_step(image, settings) for image in image_users),
            Step(f"model version {name}@{version}", delete_version),
        ],
        notes,
    )


def model_dependents(name: str, version: str, settings: PipelineSettings | None = None) -> dict[str, Any]:
    """The service and images of a version, as ``models show`` lists them."""
    settings = settings or get_pipeline_settings()
    placement = services.saved_placements(settings).get(name)
    engine_images, notes = _engine_images(settings)
    return {
        "service": name if placement is not None and services.serves_version(placement, version) else None,
        "images": [image.reference for image in engine_images if (image.model, image.version) == (name, version)],
        "notes": notes,
    }
