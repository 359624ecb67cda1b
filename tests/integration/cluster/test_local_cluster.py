"""A local cluster of real processes: replicas, failover, rolling update, placement, scaling, gateway restart."""

from __future__ import annotations

import os
import signal

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fpgaflow.fpga_runtime import codec
from fpgaflow.fpga_runtime.cluster.daemon import cluster_client, gateway_running, start_gateway
from fpgaflow.fpga_runtime.cluster.processes import pid_alive, wait_for_exit
from fpgaflow.fpga_runtime.errors import UpstreamError
from fpgaflow.fpga_runtime.proto import open_inference_pb2 as oip
from fpgaflow.fpga_runtime.proto import tf_serving_pb2 as tf_pb
from fpgaflow.fpga_runtime.protocol import TF_PREDICT, oip_method
from tests.fixtures.tiny_service import encoded_images, reference_probabilities, write_tiny_service
from tests.integration.cluster.conftest import Load, eventually, gateway_client, kill_leftovers, running_cluster, status

pytestmark = pytest.mark.slow
NODES = 3


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    root = tmp_path_factory.mktemp("services")
    return {
        "v1": write_tiny_service(root / "tiny-1", name="tiny", version="1", seed=1),
        "v2": write_tiny_service(root / "tiny-2", name="tiny", version="2", seed=2),
        "other": write_tiny_service(root / "other", name="other", version="1", seed=3),
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("cluster-home"), nodes=NODES) as settings:
        yield settings


@pytest.fixture
def client(cluster):
    with cluster_client(cluster) as opened:
        yield opened


@pytest.fixture
def tiny(client, services):
    """tiny version 1 on two replicas; undeployed afterwards."""
    client.deploy(str(services["v1"]), 2)
    yield services["v1"]
    client.undeploy("tiny")


def model_nodes(settings, model: str) -> list[dict]:
    return [node for node in status(settings)["nodes"] if node["model"] == model]


def test_two_replicas_answer_both_apis_like_the_model_and_status_names_every_node(cluster, client, tiny):
    images = encoded_images(3)
    with gateway_client(cluster) as scorer:
        probabilities = scorer.score_images(images)
        assert scorer.class_names() == ("cat", "dog", "fox")
    np.testing.assert_allclose(probabilities, reference_probabilities(tiny, images), rtol=1e-5, atol=1e-6)

    request = oip.ModelInferRequest(model_name="tiny")
    request.inputs.add(name="images", datatype="BYTES", shape=[1], contents=oip.InferTensorContents(bytes_contents=images[:1]))
    request.outputs.add(name="probabilities")
    with grpc.insecure_channel(status(cluster)["gateway"]["address"]) as channel:
        infer = channel.unary_unary(
            oip_method("ModelInfer"), oip.ModelInferRequest.SerializeToString, oip.ModelInferResponse.FromString
        )
        response = infer(request, timeout=30)
        ready = channel.unary_unary(
            oip_method("ModelReady"), oip.ModelReadyRequest.SerializeToString, oip.ModelReadyResponse.FromString
        )
        metadata = channel.unary_unary(
            oip_method("ModelMetadata"), oip.ModelMetadataRequest.SerializeToString, oip.ModelMetadataResponse.FromString
        )
        assert ready(oip.ModelReadyRequest(name="tiny"), timeout=10).ready
        described = metadata(oip.ModelMetadataRequest(name="tiny"), timeout=10)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.model_name == "tiny" and response.model_version == "1"
    np.testing.assert_allclose(codec.infer_outputs_to_numpy(response)["probabilities"], probabilities[:1], rtol=1e-5, atol=1e-6)
    assert described.versions == ["1"] and {t.name for t in described.inputs} == {"images", "input"}
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    state = status(cluster)
    assert [node["id"] for node in state["nodes"]] == ["node-1", "node-2", "node-3"]
    serving = model_nodes(cluster, "tiny")
    assert len(serving) == 2
    for node in serving:
        assert node["healthy"] is True and pid_alive(node["pid"]) and node["address"].startswith("127.0.0.1:")
        assert node["container"] is None
    (model,) = state["models"]
    assert (model["name"], model["version"], model["replicas"], model["healthy_replicas"]) == ("tiny", "1", 2, 2)
    assert [replica["requests"] for replica in model["placement"]] == [1, 1]  # one at a time: they take turns
    assert model["requests"] >= 2 and model["failed"] == 0 and model["p50_ms"] > 0 and model["p99_ms"] >= model["p50_ms"]


def test_errors_of_a_node_reach_the_client_with_their_status(cluster, tiny):
    with gateway_client(cluster) as scorer:
        with pytest.raises(Exception, match="INVALID_ARGUMENT") as bad_image:
            scorer.score_images([b"not an image"])
        assert "image 0" in str(bad_image.value)
    with gateway_client(cluster, model="nope") as scorer, pytest.raises(Exception, match="NOT_FOUND.*'nope' is not deployed"):
        scorer.score_images(encoded_images(1))


def test_a_node_killed_mid_load_fails_no_request_and_is_restarted(cluster, tiny):
    victim = model_nodes(cluster, "tiny")[0]
    with Load(cluster, "tiny") as load:
        load.wait_for(20)
        os.kill(victim["pid"], signal.SIGKILL)
        load.wait_for(40)
        restarted = eventually(
            lambda: next(
                (n for n in model_nodes(cluster, "tiny") if n["id"] == victim["id"] and n["healthy"] and n["pid"]), None
            ),
            what=f"the restart of {victim['id']}",
        )
        load.wait_for(20)
    assert load.failures == []
    assert restarted["pid"] != victim["pid"] and restarted["restarts"] == 1
    (model,) = status(cluster)["models"]
    assert model["healthy_replicas"] == 2 and model["retried"] >= 1  # requests that met the dead node went elsewhere


def test_a_rolling_update_fails_no_request_and_ends_on_the_new_version(cluster, client, services, tiny):
    images = encoded_images(2)
    with Load(cluster, "tiny") as load:
        load.wait_for(10)
        updated = client.deploy(str(services["v2"]), 2)
        load.wait_for(10)
    assert load.failures == []
    assert (updated["version"], updated["versions"], updated["replicas"]) == ("2", ["2"], 2)
    assert {node["version"] for node in model_nodes(cluster, "tiny")} == {"2"}
    with gateway_client(cluster) as scorer:
        np.testing.assert_allclose(
            scorer.score_images(images), reference_probabilities(services["v2"], images), rtol=1e-5, atol=1e-6
        )
    assert predict_version(cluster, "2", images).model_spec.version.value == 2
    with pytest.raises(grpc.RpcError) as gone:
        predict_version(cluster, "1", images)
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND and "versions: ['2']" in gone.value.details()


def predict_version(settings, version: str, images: list[bytes]) -> tf_pb.PredictResponse:
    request = tf_pb.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.version.value = int(version)
    request.inputs["images"].CopyFrom(codec.numpy_to_tensor_proto(images))
    with grpc.insecure_channel(status(settings)["gateway"]["address"]) as channel:
        predict = channel.unary_unary(TF_PREDICT, tf_pb.PredictRequest.SerializeToString, tf_pb.PredictResponse.FromString)
        return predict(request, timeout=30)


def test_placement_refuses_with_the_counts_scale_changes_replicas_and_undeploy_frees(cluster, client, services, tiny):
    with pytest.raises(UpstreamError, match=r"2 asked, 1 of 3 free") as refused:
        client.deploy(str(services["other"]), 2)
    assert refused.value.status is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [model["name"] for model in status(cluster)["models"]] == ["tiny"]

    assert client.scale("tiny", 3)["replicas"] == 3
    assert len(model_nodes(cluster, "tiny")) == 3
    with pytest.raises(UpstreamError, match=r"1 asked, 0 of 3 free"):
        client.scale("tiny", 4)

    stopped = [node["pid"] for node in model_nodes(cluster, "tiny")[1:]]
    assert client.scale("tiny", 1)["replicas"] == 1
    assert len(model_nodes(cluster, "tiny")) == 1
    assert all(wait_for_exit(pid, 30) for pid in stopped)
    with gateway_client(cluster) as scorer:
        assert scorer.score_images(encoded_images(1)).shape == (1, 3)

    assert client.undeploy("tiny")["freed_nodes"] == ["node-1"]
    assert model_nodes(cluster, "tiny") == [] and status(cluster)["models"] == []
    client.deploy(str(services["v1"]), 2)  # the fixture undeploys it again


def test_the_gateway_restarts_with_its_placements_and_adopts_the_nodes_still_running(tmp_path, services, monkeypatch):
    monkeypatch.setenv(
        "FPGAFLOW_CLUSTER_GATEWAY_WATCHDOG", "false"
    )  # restarted by hand here; tests/reliability covers the watchdog
    with running_cluster(tmp_path / "home", nodes=2) as settings:
        with cluster_client(settings) as client:
            client.deploy(str(services["v1"]), 2)
        before = status(settings)
        os.kill(before["gateway"]["pid"], signal.SIGKILL)
        assert wait_for_exit(before["gateway"]["pid"], 30)
        assert not gateway_running(settings)

        start_gateway(settings, port=0)
        after = eventually(
            lambda: (lambda s: s if s["models"] and s["models"][0]["healthy_replicas"] == 2 else None)(status(settings)),
            what="both replicas healthy again",
        )
        assert after["gateway"]["pid"] != before["gateway"]["pid"]
        assert [(n["id"], n["pid"], n["model"]) for n in after["nodes"]] == [
            (n["id"], n["pid"], n["model"]) for n in before["nodes"]
        ]
        assert [(m["name"], m["version"], m["placement"]) for m in after["models"]] == [
            (m["name"], m["version"], m["placement"]) for m in before["models"]
        ]
        images = encoded_images(2)
        with gateway_client(settings) as scorer:
            np.testing.assert_allclose(
                scorer.score_images(images), reference_probabilities(services["v1"], images), rtol=1e-5, atol=1e-6
            )
    kill_leftovers(settings)


def test_api_keys_are_checked_at_the_gateway_and_passed_on_to_the_nodes(tmp_path, services, monkeypatch):
    monkeypatch.setenv("FPGAFLOW_SERVER_API_KEYS", '["primary", "secondary"]')
    with running_cluster(tmp_path / "home", nodes=1) as settings:
        with cluster_client(settings) as client:
            client.deploy(str(services["v1"]), 1)
        with gateway_client(settings, access_token="secondary") as scorer:
            assert scorer.score_images(encoded_images(1)).shape == (1, 3)
        with gateway_client(settings) as scorer, pytest.raises(Exception, match="UNAUTHENTICATED"):
            scorer.score_images(encoded_images(1))
