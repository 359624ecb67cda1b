"""`fpgaflow models|images|services list|show|delete`: what is registered, built and deployed, and removing it.

A table on the terminal, ``--json`` for scripts. Deletion goes in dependency order (service, image, model
version) and is refused, with the reason and exit code 1, while something still uses what is to be deleted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fpgaflow.flows.cli.tables import cell, table

MODEL_REFERENCE = "NAME[@VERSION|@ALIAS]"


def register(subparsers) -> None:
    models = subparsers.add_parser("models", help="Registered model versions (MLflow): list, show, delete.")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="MODELS_COMMAND")
    listing = model_commands.add_parser("list", help="Every registered model, or every version of NAME.")
    listing.add_argument("name", nargs="?", help="List this model's versions.")
    _add_json(listing)
    listing.set_defaults(handler=_models_list)
    show = model_commands.add_parser("show", help="One version (NAME alone: the newest): tags, description, card, users.")
    show.add_argument("reference", metavar=MODEL_REFERENCE)
    _add_json(show)
    show.set_defaults(handler=_models_show)
    delete = model_commands.add_parser(
        "delete", help="Delete a version (NAME alone: the newest); refused while its service or image exists."
    )
    delete.add_argument("reference", metavar=MODEL_REFERENCE)
    delete.add_argument("--cascade", action="store_true", help="Delete its service, then its images, then the version.")
    _add_json(delete)
    delete.set_defaults(handler=_models_delete)

    images = subparsers.add_parser("images", help="Serving images on the Docker engine: list, delete.")
    image_commands = images.add_subparsers(dest="images_command", required=True, metavar="IMAGES_COMMAND")
    listing = image_commands.add_parser("list", help="Every fpgaflow serving image.")
    _add_json(listing)
    listing.set_defaults(handler=_images_list)
    delete = image_commands.add_parser("delete", help="Delete an image (tag or id); refused while a service runs it.")
    delete.add_argument("reference", metavar="TAG|ID")
    delete.add_argument("--cascade", action="store_true", help="Delete the services running it first.")
    _add_json(delete)
    delete.set_defaults(handler=_images_delete)

    services = subparsers.add_parser("services", help="Models deployed on the emulated FPGA cluster: list, show, delete.")
    service_commands = services.add_subparsers(dest="services_command", required=True, metavar="SERVICES_COMMAND")
    listing = service_commands.add_parser("list", help="Every service on the cluster.")
    _add_json(listing)
    listing.set_defaults(handler=_services_list)
    show = service_commands.add_parser("show", help="One service: versions, replicas, nodes, image, request statistics.")
    show.add_argument("name")
    _add_json(show)
    show.set_defaults(handler=_services_show)
    delete = service_commands.add_parser("delete", help="Stop serving a model; its nodes become free.")
    delete.add_argument("name")
    _add_json(delete)
    delete.set_defaults(handler=_services_delete)


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=str))


def _settings():
    from fpgaflow.tasks.settings import get_pipeline_settings

    return get_pipeline_settings()


def _carry_out(plan, as_json: bool) -> int:
    result = plan.carry_out()
    if as_json:
        _print_json(result)
    else:
        for what in result["deleted"]:
            print(f"deleted {what}")
        for note in result["notes"]:
            print(f"note: {note}")
    return 0


def _refusals(command: str):
    """Runs a delete: a refusal or a failure midway is one line on stderr and exit code 1."""

    def wrap(handler):
        def run(args: argparse.Namespace) -> int:
            from fpgaflow.tasks.operations.lifecycle import DeletionIncomplete, DeletionRefused

            try:
                return handler(args)
            except DeletionRefused as error:
                print(f"fpgaflow {command}: refused: {error}", file=sys.stderr)
            except DeletionIncomplete as error:
                print(f"fpgaflow {command}: {error}", file=sys.stderr)
            return 1

        return run

    return wrap


# -- models ------------------------------------------------------------------------------------


def _models_list(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.registry import catalog
    from fpgaflow.tasks.registry.client import mlflow_client

    client = mlflow_client(_settings())
    if args.name:
        rows = catalog.version_rows(client, args.name)
        if not rows and not args.json:
            print(f"no versions of {args.name!r} in the registry")
            return 0
        columns = ["version", "aliases", "status", "numeric_format", "gates", "created", "tags", "description"]
    else:
        rows = catalog.list_models(client)
        if not rows and not args.json:
            print("no registered models")
            return 0
        columns = ["name", "versions", "newest", "aliases", "updated"]
    if args.json:
        _print_json(rows)
    else:
        print(table([column.upper() for column in columns], [[row[column] for column in columns] for row in rows]))
    return 0


def _models_show(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.operations.lifecycle import model_dependents
    from fpgaflow.tasks.registry import catalog
    from fpgaflow.tasks.registry.client import mlflow_client

    settings = _settings()
    model_version = catalog.find_version(mlflow_client(settings), catalog.VersionReference.parse(args.reference))
    shown = catalog.describe_version(model_version)
    shown.update(model_dependents(shown["name"], shown["version"], settings))
    if args.json:
        _print_json(shown)
        return 0
    aliases = f" ({', '.join(shown['aliases'])})" if shown["aliases"] else ""
    print(f"{shown['name']} version {shown['version']}{aliases}")
    for key in (
        "description",
        "tags",
        "status",
        "numeric_format",
        "gates",
        "featurizer",
        "created",
        "run_id",
        "service",
        "images",
    ):
        print(f"  {key:<15} {cell(shown[key])}")
    for note in shown["notes"]:
        print(f"  note: {note}")
    if shown["model_card"]:
        print()
        print(shown["model_card"])
    return 0


@_refusals("models delete")
def _models_delete(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.operations.lifecycle import plan_model_deletion

    return _carry_out(plan_model_deletion(args.reference, cascade=args.cascade, settings=_settings()), args.json)


# -- images ------------------------------------------------------------------------------------


def _images_list(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.deployment.services import images_of, saved_placements
    from fpgaflow.tasks.packaging.images import list_images

    settings = _settings()
    placements = saved_placements(settings)
    rows = [
        {
            **image.model_dump(),
            "reference": image.reference,
            "services": [name for name, placement in sorted(placements.items()) if images_of(placement) & image.names()],
        }
        for image in list_images(settings)
    ]
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no fpgaflow serving images on the Docker engine")
    else:
        print(
            table(
                ["IMAGE", "MODEL", "VERSION", "FORMAT", "SIZE MB", "CREATED", "USED BY"],
                [
                    [
                        row["reference"],
                        row["model"],
                        row["version"],
                        row["numeric_format"],
                        round(row["size_bytes"] / 1e6),
                        row["created"],
                        row["services"],
                    ]
                    for row in rows
                ],
            )
        )
    return 0


@_refusals("images delete")
def _images_delete(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.operations.lifecycle import plan_image_deletion

    return _carry_out(plan_image_deletion(args.reference, cascade=args.cascade, settings=_settings()), args.json)


# -- services ----------------------------------------------------------------------------------


def _services_list(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.deployment.services import list_services

    rows = list_services(_settings())
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no services on the cluster")
    else:
        print(
            table(
                ["SERVICE", "VERSION", "REPLICAS", "HEALTHY", "IMAGE", "ENDPOINT", "RUNNING"],
                [
                    [
                        row["name"],
                        row["versions"],
                        row["replicas"],
                        row["healthy_replicas"],
                        row["image"],
                        row["endpoint"],
                        "yes" if row["running"] else "no (gateway down; `fpgaflow cluster up`)",
                    ]
                    for row in rows
                ],
            )
        )
    return 0


def _services_show(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.deployment.services import get_service

    service = get_service(args.name, _settings())
    if args.json:
        _print_json(service)
        return 0
    print(f"service {service['name']} version {service['version']}")
    for key, value in service.items():
        if key not in ("name", "version", "placement"):
            print(f"  {key:<18} {cell(value)}")
    for index, replica in enumerate(service.get("placement", []), start=1):
        print(f"  replica {index}: version {replica['version']} on {', '.join(replica['nodes'])}, {replica['requests']} requests")
    return 0


@_refusals("services delete")
def _services_delete(args: argparse.Namespace) -> int:
    from fpgaflow.tasks.operations.lifecycle import plan_service_deletion

    return _carry_out(plan_service_deletion(args.name, _settings()), args.json)
