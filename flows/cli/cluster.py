"""The emulated FPGA cluster: `fpgaflow cluster up|status|down`, `fpgaflow deploy`, `undeploy`, `scale`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fpgaflow.flows.cli import UsageError
from fpgaflow.flows.cli.run import add_label_arguments, add_quiet_argument
from fpgaflow.flows.cli.tables import table

if TYPE_CHECKING:
    from fpgaflow.fpga_runtime.settings import Settings

TARGETS = ("local", "docker")


def register(subparsers) -> None:
    cluster = subparsers.add_parser("cluster", help="The emulated FPGA cluster: nodes behind one gateway.")
    commands = cluster.add_subparsers(dest="cluster_command", required=True, metavar="CLUSTER_COMMAND")
    up = commands.add_parser(
        "up", help="Start the cluster's gateway (a new cluster, or the saved one again, re-adopting its nodes)."
    )
    up.add_argument(
        "--nodes", type=int, help="Nodes (one emulated FPGA each); default: the cluster_nodes setting, or the saved size."
    )
    up.add_argument("--device", help="Device profile of every node (default: the device_profile setting).")
    up.add_argument(
        "--target", choices=TARGETS, help="Nodes as local processes or Docker containers (default: the cluster_target setting)."
    )
    up.add_argument("--port", type=int, help="Gateway port; 0 picks a free one (default: the cluster_gateway_port setting).")
    up.add_argument("--json", action="store_true", help="Print the cluster status as one JSON object.")
    up.set_defaults(handler=_up)
    status = commands.add_parser("status", help="Nodes, models, health, request rates and p50/p99 latency.")
    status.add_argument(
        "--json",
        action="store_true",
        help="Print one JSON object (nodes: id, address, pid/container, model, segment, host, healthy).",
    )
    status.set_defaults(handler=_status)
    down = commands.add_parser("down", help="Stop every node and the gateway; remove what the cluster made.")
    down.add_argument("--json", action="store_true")
    down.set_defaults(handler=_down)
    reload_keys = commands.add_parser(
        "reload-keys",
        help="Make the gateway read its API keys again (after editing the gateway_api_keys_file): rotation without downtime.",
    )
    reload_keys.set_defaults(handler=_reload_keys)

    deploy = subparsers.add_parser(
        "deploy",
        help="Deploy a model version onto the cluster (rolling update if another version runs), or build and deploy "
        "a featurizer's ImageNet classifier (imagenet/resnet50 ...).",
    )
    deploy.add_argument("reference", metavar="NAME@ALIAS|NAME@VERSION|SERVICE_DIR|imagenet/FEATURIZER")
    deploy.add_argument("--replicas", type=int, default=1, help="Replicas (default 1).")
    deploy.add_argument(
        "--target",
        choices=("local", "docker", "kubernetes"),
        help="Default: the running cluster's target, else the cluster_target setting.",
    )
    deploy.add_argument("--image", help="Serving image to run (docker, kubernetes); default: build it.")
    deploy.add_argument(
        "--render",
        type=Path,
        metavar="DIR",
        help="With --target kubernetes: write the manifests into DIR and stop (no cluster, no image build).",
    )
    deploy.add_argument("--base-image", help="Base image when the serving image is built (default: the image_base setting).")
    deploy.add_argument("--device", help="Device profile of a cluster this command starts (default: the device_profile setting).")
    deploy.add_argument("--json", action="store_true")
    imagenet = deploy.add_argument_group("imagenet/FEATURIZER (the ImageNet classifier, 1,000 classes)")
    imagenet.add_argument(
        "--calibration", type=Path, help="Folder of your own images: int8 calibration and the numerics gate's comparison."
    )
    imagenet.add_argument("--input-size", type=int, help="Square input side in pixels (default 224).")
    imagenet.add_argument(
        "--numerics",
        type=lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
        help="Comma-separated numeric formats to compare with fp32 (default fp32,int8,msfp9).",
    )
    add_label_arguments(imagenet)
    add_quiet_argument(imagenet)
    deploy.set_defaults(handler=_deploy)

    undeploy = subparsers.add_parser("undeploy", help="Stop serving a model; its nodes become free.")
    undeploy.add_argument("name")
    undeploy.add_argument("--json", action="store_true")
    undeploy.set_defaults(handler=_undeploy)

    scale = subparsers.add_parser("scale", help="Change the number of replicas of a deployed model.")
    scale.add_argument("name")
    scale.add_argument("--replicas", type=int, required=True)
    scale.add_argument("--json", action="store_true")
    scale.set_defaults(handler=_scale)


def _settings():
    from fpgaflow.tasks.settings import get_pipeline_settings

    return get_pipeline_settings()


def _print_json(value) -> None:
    print(json.dumps(value, default=str))


def _up(args: argparse.Namespace) -> int:
    from fpgaflow.fpga_runtime.cluster.daemon import start_gateway

    if args.nodes is not None and args.nodes < 1:
        raise UsageError(f"--nodes must be at least 1, got {args.nodes}")
    settings = _settings()
    start_gateway(settings, nodes=args.nodes, device=args.device, target=args.target, port=args.port)
    return _show_status(settings, args.json)


def _status(args: argparse.Namespace) -> int:
    return _show_status(_settings(), args.json)


def _show_status(settings: Settings, as_json: bool) -> int:
    from fpgaflow.fpga_runtime.cluster.daemon import cluster_client

    with cluster_client(settings) as client:
        status = client.status()
    if as_json:
        _print_json(status)
    else:
        _print_status(status)
    return 0


def _down(args: argparse.Namespace) -> int:
    from fpgaflow.fpga_runtime.cluster.daemon import stop_cluster

    result = stop_cluster(_settings())
    if args.json:
        _print_json(result)
    else:
        print(
            f"cluster down: stopped {len(result['stopped_nodes'])} node(s), "
            f"undeployed {', '.join(result['undeployed']) or 'nothing'}"
        )
    return 0


def _reload_keys(args: argparse.Namespace) -> int:
    from fpgaflow.fpga_runtime.cluster.daemon import cluster_client

    with cluster_client(_settings()) as client:
        count = client.reload_keys()["api_keys"]
    print(f"the gateway now accepts {count} API key(s)")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    if args.replicas < 1:
        raise UsageError(f"--replicas must be at least 1, got {args.replicas}")
    from fpgaflow.flows.cli.imagenet import deploy_imagenet, is_imagenet_reference

    if is_imagenet_reference(args.reference):
        return deploy_imagenet(args)
    if args.tags or args.description:
        raise UsageError("--tag and --description label a version when it is registered: give them to `fpgaflow run`")
    from fpgaflow.tasks.deployment.deploy import deploy
    from fpgaflow.tasks.errors import PipelineStepError

    try:
        result = deploy(
            args.reference,
            target=args.target,
            replicas=args.replicas,
            image=args.image,
            base_image=args.base_image,
            device=args.device,
            render_dir=args.render,
        )
    except PipelineStepError as error:
        print(f"fpgaflow deploy: {error}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(
            {
                "model": result.model,
                "version": result.version,
                **result.summary(),
                "nodes": result.nodes,
                "service_dir": result.service_dir,
            }
        )
    else:
        split = f", split across {result.devices} devices each" if result.devices > 1 else ""
        verb = "deployed" if result.applied else "rendered"
        print(
            f"{verb} {result.model} version {result.version} on {result.target}: {result.replicas} replica(s){split}; "
            f"endpoint {result.endpoint}"
        )
        if result.smoke:
            print(f"smoke test through the Service: {json.dumps(result.smoke)}")
        if not result.applied:
            print(f"not applied: {result.reason}")
    return 0


def _undeploy(args: argparse.Namespace) -> int:
    from fpgaflow.fpga_runtime.cluster.daemon import cluster_client

    with cluster_client(_settings()) as client:
        result = client.undeploy(args.name)
    if args.json:
        _print_json(result)
    else:
        print(f"undeployed {result['name']}; freed {', '.join(result['freed_nodes'])}")
    return 0


def _scale(args: argparse.Namespace) -> int:
    if args.replicas < 1:
        raise UsageError(f"--replicas must be at least 1 (to stop serving, use undeploy), got {args.replicas}")
    from fpgaflow.fpga_runtime.cluster.daemon import cluster_client

    with cluster_client(_settings()) as client:
        result = client.scale(args.name, args.replicas)
    if args.json:
        _print_json(result)
    else:
        print(f"{result['name']} version {result['version']}: {result['replicas']} replica(s), endpoint {result['endpoint']}")
    return 0


def _print_status(status: dict) -> None:
    gateway = status["gateway"] or {}
    print(
        f"cluster {status['name']}: {status['target']} target, {len(status['nodes'])} {status['device']} node(s), "
        f"gateway {gateway.get('address')} (pid {gateway.get('pid')})"
    )
    print()
    print(
        table(
            [
                "NODE",
                "ADDRESS",
                "PID" if status["target"] == "local" else "CONTAINER",
                "MODEL",
                "SEGMENT",
                "HELD BY",
                "HEALTHY",
                "RESTARTS",
            ],
            [
                [
                    node["id"],
                    node["address"],
                    node["pid"] if status["target"] == "local" else node["container"],
                    f"{node['model']} {node['version']}" if node["model"] else None,
                    node["segment"],
                    node["host"],
                    "yes" if node["healthy"] else "NO",
                    node["restarts"],
                ]
                for node in status["nodes"]
            ],
        )
    )
    if status["models"]:
        print()
        print(
            table(
                [
                    "MODEL",
                    "VERSION",
                    "REPLICAS",
                    "HEALTHY",
                    "NODES/REPLICA",
                    "DEVICES/REPLICA",
                    "REQ/S",
                    "P50 MS",
                    "P99 MS",
                    "REQUESTS",
                    "FAILED",
                ],
                [
                    [
                        model["name"],
                        ",".join(model["versions"]),
                        model["replicas"],
                        model["healthy_replicas"],
                        model["nodes_per_replica"],
                        model["devices_per_replica"],
                        model["rate_per_second"],
                        model["p50_ms"],
                        model["p99_ms"],
                        model["requests"],
                        model["failed"],
                    ]
                    for model in status["models"]
                ],
            )
        )
