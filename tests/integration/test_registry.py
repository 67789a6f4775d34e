"""ci.adapters.registry + ci.stages.publish against a real registry (distribution 2.8), with faults.

Images are uploaded straight through the registry API (tiny, one layer) so these tests take
seconds; the Docker-built images are covered by test_docker_engine and the e2e suite.
"""

from __future__ import annotations

import json
import secrets

import pytest

from ci.adapters.registry import Credentials, ImageRef, RegistryClient
from ci.core import redact
from ci.core.config import PublishConfig, RegistryAuth
from ci.core.errors import ConfigError, GateFailed, RegistryError
from ci.core.oci import OCI_INDEX
from ci.core.results import PlatformResult, SourceInfo
from ci.stages.publish import TagMoveError, build_index, publish, verify_index
from tests.fixtures.registry import (
    DIGEST_PUT,
    TAG_PUT,
    FaultProxy,
    Registry,
    push_tiny_image,
    put_raw_manifest,
)
from tests.verdicts import permit_for

pytestmark = pytest.mark.integration
PLATFORMS = ["linux/amd64", "linux/arm64"]


def repo_name() -> str:
    return f"it/app-{secrets.token_hex(4)}"


def results_for(host: str, repo: str, digests: dict[str, str]) -> list[PlatformResult]:
    return [
        PlatformResult(project="app", image=f"{host}/{repo}", platform=p, runner="local",
                       engine="docker", placement="native", status="passed", digest=d,
                       run_id="r1", source=SourceInfo(sha="c0ffee"))
        for p, d in digests.items()
    ]


def pushed(registry: Registry, repo: str) -> dict[str, str]:
    return {p: push_tiny_image(registry.url, repo, p) for p in PLATFORMS}


def test_publish_writes_index_with_real_platforms_and_moves_tags(registry: Registry) -> None:
    repo = repo_name()
    digests = pushed(registry, repo)
    client = RegistryClient(registry.host)
    out = publish(permit_for(results_for(registry.host, repo, digests), PLATFORMS, f"{registry.host}/{repo}"),
                  ["sha-c0ffee", "main"], {"dev.maci.run-id": "r1"}, client)
    assert registry.tags(repo) == ["main", "sha-c0ffee"]
    assert out.tags == ["sha-c0ffee", "main"] and out.platforms == PLATFORMS
    status, body = registry.get(f"/v2/{repo}/manifests/main", OCI_INDEX)
    index = json.loads(body)
    assert status == 200 and index["mediaType"] == OCI_INDEX
    assert {(m["platform"]["os"], m["platform"]["architecture"], m["digest"])
            for m in index["manifests"]} == {("linux", "amd64", digests["linux/amd64"]),
                                             ("linux", "arm64", digests["linux/arm64"])}
    assert index["annotations"] == {"dev.maci.run-id": "r1"}
    assert client.resolve(repo, "main") == out.digest


def test_variant_is_read_from_the_config(registry: Registry) -> None:
    repo = repo_name()
    digest = push_tiny_image(registry.url, repo, "linux/arm/v7")
    desc = RegistryClient(registry.host).descriptor(repo, digest)
    assert desc["platform"] == {"architecture": "arm", "os": "linux", "variant": "v7"}


def test_digest_whose_config_disagrees_with_its_platform_is_refused(registry: Registry) -> None:
    repo = repo_name()
    arm = push_tiny_image(registry.url, repo, "linux/arm64")
    with pytest.raises(RegistryError, match="pushed for linux/amd64 but its config says"):
        build_index(RegistryClient(registry.host), repo, {"linux/amd64": arm}, {})


def test_attestation_entries_are_dropped_from_a_pushed_index(registry: Registry) -> None:
    repo = repo_name()
    image = push_tiny_image(registry.url, repo, "linux/arm64")
    attest = push_tiny_image(registry.url, repo, "unknown/unknown")
    wrapped = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image,
         "size": 1, "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": attest,
         "size": 1, "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
    ]}).encode()
    outer = put_raw_manifest(registry.url, repo, _sha(wrapped), wrapped, OCI_INDEX)
    client = RegistryClient(registry.host)
    body = build_index(client, repo, {"linux/arm64": outer}, {})
    entries = json.loads(body)["manifests"]
    assert [(e["digest"], e["platform"]["architecture"]) for e in entries] == [(image, "arm64")]


def test_verify_rejects_an_index_with_other_platforms(registry: Registry) -> None:
    repo = repo_name()
    client = RegistryClient(registry.host)
    body = build_index(client, repo, pushed(registry, repo), {})
    digest = client.put_manifest(repo, _sha(body), body, OCI_INDEX)
    assert verify_index(client, repo, digest, PLATFORMS) == PLATFORMS
    with pytest.raises(RegistryError, match="expected"):
        verify_index(client, repo, digest, ["linux/amd64"])


def test_first_tag_write_failing_moves_no_tag(registry: Registry, fault_proxy: FaultProxy) -> None:
    repo = repo_name()
    digests = pushed(registry, repo)
    fault_proxy.fail("PUT", TAG_PUT)
    with pytest.raises(TagMoveError) as info:
        publish(permit_for(results_for(fault_proxy.host, repo, digests), PLATFORMS,
                f"{fault_proxy.host}/{repo}"), ["sha-c0ffee", "main"], {},
                RegistryClient(fault_proxy.host))
    assert info.value.message.startswith("no tag moved")
    assert "HTTP 503" in info.value.message and "injected fault" in info.value.message
    assert info.value.not_moved == ["sha-c0ffee", "main"] and info.value.moved == []
    assert registry.tags(repo) == []
    assert len(fault_proxy.requests("PUT", TAG_PUT)) == 3  # retried, then gave up


def test_later_tag_failing_rolls_back_moved_tags(registry: Registry,
                                                 fault_proxy: FaultProxy) -> None:
    repo = repo_name()
    client = RegistryClient(fault_proxy.host)
    first = publish(permit_for(results_for(fault_proxy.host, repo, pushed(registry, repo)), PLATFORMS,
                    f"{fault_proxy.host}/{repo}"), ["main"], {"dev.maci.run-id": "old"}, client)
    fault_proxy.fail("PUT", TAG_PUT, skip=2, times=3)  # main, sha-new move; v1 fails 3 times
    with pytest.raises(TagMoveError) as info:
        publish(permit_for(results_for(fault_proxy.host, repo, pushed(registry, repo)), PLATFORMS,
                f"{fault_proxy.host}/{repo}"), ["main", "sha-new", "v1"],
                {"dev.maci.run-id": "new"}, client)
    err = info.value
    assert err.message.startswith("no tag moved (rolled back")
    assert sorted(err.rolled_back) == ["main", "sha-new"] and err.moved == []
    assert registry.tags(repo) == ["main"]
    assert RegistryClient(registry.host).resolve(repo, "main") == first.digest


def test_failed_rollback_is_reported_as_moved(registry: Registry,
                                              fault_proxy: FaultProxy) -> None:
    repo = repo_name()
    client = RegistryClient(fault_proxy.host)
    publish(permit_for(results_for(fault_proxy.host, repo, pushed(registry, repo)), PLATFORMS,
            f"{fault_proxy.host}/{repo}"), ["main"], {"dev.maci.run-id": "old"}, client)
    fault_proxy.fail("PUT", TAG_PUT, skip=1)  # "main" moves, then every tag write fails
    with pytest.raises(TagMoveError) as info:
        publish(permit_for(results_for(fault_proxy.host, repo, pushed(registry, repo)), PLATFORMS,
                f"{fault_proxy.host}/{repo}"), ["main", "v1"], {"dev.maci.run-id": "new"},
                client)
    assert info.value.message.startswith("tags LEFT MOVED to the new index: main")
    assert info.value.moved == ["main"] and info.value.not_moved == ["v1"]


def test_index_write_failing_leaves_nothing(registry: Registry, fault_proxy: FaultProxy) -> None:
    repo = repo_name()
    digests = pushed(registry, repo)
    fault_proxy.fail("PUT", DIGEST_PUT)
    with pytest.raises(RegistryError, match="HTTP 503"):
        publish(permit_for(results_for(fault_proxy.host, repo, digests), PLATFORMS,
                f"{fault_proxy.host}/{repo}"), ["main"], {}, RegistryClient(fault_proxy.host))
    assert registry.tags(repo) == [] and registry.indexes(repo) == []
    assert fault_proxy.requests("PUT", TAG_PUT) == []


def test_transient_errors_are_retried(registry: Registry, fault_proxy: FaultProxy) -> None:
    repo = repo_name()
    digests = pushed(registry, repo)
    fault_proxy.fail("PUT", TAG_PUT, times=1)
    out = publish(permit_for(results_for(fault_proxy.host, repo, digests), PLATFORMS,
                  f"{fault_proxy.host}/{repo}"), ["main"], {}, RegistryClient(fault_proxy.host))
    assert out.tags == ["main"] and registry.tags(repo) == ["main"]


def test_gate_refusal_sends_no_request(registry: Registry, fault_proxy: FaultProxy) -> None:
    repo = repo_name()
    digests = pushed(registry, repo)
    [amd] = results_for(fault_proxy.host, repo, {"linux/amd64": digests["linux/amd64"]})
    with pytest.raises(GateFailed, match="linux/arm64: no result"):
        publish(permit_for([amd], PLATFORMS, f"{fault_proxy.host}/{repo}"), ["main"], {},
                RegistryClient(fault_proxy.host))
    assert fault_proxy.log == []


def test_remove_tag_keeps_the_manifest(registry: Registry) -> None:
    repo = repo_name()
    digest = push_tiny_image(registry.url, repo, "linux/amd64")
    client = RegistryClient(registry.host)
    _, body = registry.get(f"/v2/{repo}/manifests/{digest}",
                           "application/vnd.oci.image.manifest.v1+json")
    put_raw_manifest(registry.url, repo, "maci-tmp-1", body,
                     "application/vnd.oci.image.manifest.v1+json")
    assert registry.tags(repo) == ["maci-tmp-1"]
    client.remove_tag(repo, "maci-tmp-1")
    assert registry.tags(repo) == []
    assert client.resolve(repo, digest) == digest
    client.remove_tag(repo, "maci-tmp-1")  # already gone: no error


def test_remove_tag_on_a_registry_without_deletes_says_why(registry_no_delete: Registry) -> None:
    repo = repo_name()
    digest = push_tiny_image(registry_no_delete.url, repo, "linux/amd64")
    _, body = registry_no_delete.get(f"/v2/{repo}/manifests/{digest}",
                                     "application/vnd.oci.image.manifest.v1+json")
    put_raw_manifest(registry_no_delete.url, repo, "tmp", body,
                     "application/vnd.oci.image.manifest.v1+json")
    with pytest.raises(RegistryError, match=r"HTTP 405.*UNSUPPORTED"):
        RegistryClient(registry_no_delete.host).remove_tag(repo, "tmp")
    assert registry_no_delete.tags(repo) == ["tmp"]


def test_http_errors_keep_status_and_registry_message(registry: Registry) -> None:
    with pytest.raises(RegistryError) as info:
        RegistryClient(registry.host).get_manifest("it/none", "nope")
    assert "HTTP 404" in info.value.message and "MANIFEST_UNKNOWN" in info.value.message


def test_unreachable_registry_is_a_registry_error() -> None:
    from tests.fixtures.procs import free_port

    client = RegistryClient(f"127.0.0.1:{free_port()}", attempts=1)
    with pytest.raises(RegistryError, match="cannot reach registry"):
        client.ping()


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_auth_with_password_from_env(registry: Registry, fault_proxy: FaultProxy,
                                     scheme: str) -> None:
    password = f"pw-{secrets.token_hex(6)}"
    fault_proxy.basic = ("ci-bot", password)
    fault_proxy.bearer = scheme == "bearer"
    publish_cfg = PublishConfig(auth=RegistryAuth(username="ci-bot", password_env="REG_PW"))
    repo = repo_name()
    digests = pushed(registry, repo)
    client = RegistryClient.for_image(f"{fault_proxy.host}/{repo}", publish_cfg,
                                      {"REG_PW": password})
    out = publish(permit_for(results_for(fault_proxy.host, repo, digests), PLATFORMS,
                  f"{fault_proxy.host}/{repo}"), ["main"], {}, client)
    assert out.tags == ["main"] and registry.tags(repo) == ["main"]
    assert redact.redact(f"x {password} y") == "x *** y"
    bad = RegistryClient.for_image(f"{fault_proxy.host}/{repo}", publish_cfg,
                                   {"REG_PW": password + "-wrong"})
    with pytest.raises(RegistryError, match="HTTP 401") as info:
        bad.tags(repo)
    assert password not in info.value.message


def test_password_env_must_be_set() -> None:
    auth = RegistryAuth(username="u", password_env="MISSING_PW")
    with pytest.raises(ConfigError, match=r"publish\.auth\.password_env"):
        Credentials.from_config(auth, {})


@pytest.mark.parametrize(("image", "registry", "repository"), [
    ("127.0.0.1:5000/team/app", "127.0.0.1:5000", "team/app"),
    ("ghcr.io/org/app:1.0", "ghcr.io", "org/app"),
    ("localhost/app", "localhost", "app"),
    ("library/python", "registry-1.docker.io", "library/python"),
    ("python", "registry-1.docker.io", "library/python"),
    ("python:3.11", "registry-1.docker.io", "library/python"),
    ("127.0.0.1:5000/app@sha256:" + "0" * 64, "127.0.0.1:5000", "app"),
])
def test_image_ref_parse(image: str, registry: str, repository: str) -> None:
    ref = ImageRef.parse(image)
    assert (ref.registry, ref.repository) == (registry, repository)


def _sha(body: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(body).hexdigest()
