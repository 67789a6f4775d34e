from ci.core import config as cfg
from ci.core import platforms
from ci.core.plan import RunnerInfo, make_plan, runners_for

BASE = """
[project]
name = "svc"
image = "127.0.0.1:5000/svc"
platforms = ["linux/amd64", "linux/arm64"]
"""


def runner(name: str, native: str | None, *, emulates: tuple[str, ...] = (), reachable: bool = True,
           capacity: int = 1, declared: str | None = None, error: str = "") -> RunnerInfo:
    return RunnerInfo(name=name, engine="docker", native=native, emulates=list(emulates),
                      reachable=reachable, capacity=capacity, declared=declared, error=error)


AMD_QEMU = runner("local", "linux/amd64", emulates=("linux/arm64", "linux/arm/v7"), capacity=2)


def test_amd64_native_and_arm64_emulated_on_one_runner() -> None:
    plan = make_plan(cfg.loads(BASE), [AMD_QEMU])
    kinds = {j.platform: j.placement.kind for j in plan.jobs}
    assert kinds == {"linux/amd64": "native", "linux/arm64": "emulated"}
    assert plan.ok
    assert plan.job("aarch64").placement.runner == "local"
    assert "qemu on 'local'" in plan.job("arm64").placement.reason


def test_fallback_fail_makes_arm64_unavailable() -> None:
    conf = cfg.loads(BASE + '[emulation]\nfallback = "fail"\n')
    plan = make_plan(conf, [AMD_QEMU])
    arm = plan.job("linux/arm64")
    assert arm.placement.kind == "unavailable"
    assert "fallback is 'fail'" in arm.placement.reason
    assert not plan.ok and [j.platform for j in plan.unavailable] == ["linux/arm64"]


def test_native_runner_preferred_over_emulation() -> None:
    arm = runner("arm", "linux/arm64")
    plan = make_plan(cfg.loads(BASE), [AMD_QEMU, arm])
    assert plan.job("linux/arm64").placement.model_dump() == {
        "kind": "native", "runner": "arm", "engine": "docker", "host": "",
        "reason": "runner 'arm' is linux/arm64",
    }


def test_unreachable_native_runner_falls_back_and_says_so() -> None:
    arm = runner("arm", None, reachable=False, declared="linux/arm64", error="connection refused")
    plan = make_plan(cfg.loads(BASE), [AMD_QEMU, arm])
    p = plan.job("linux/arm64").placement
    assert p.kind == "emulated" and p.runner == "local"
    assert "runner 'arm' unreachable: connection refused" in p.reason


def test_unreachable_native_runner_with_fail_policy_is_unavailable_with_reason() -> None:
    arm = runner("arm", None, reachable=False, declared="linux/arm64", error="timeout")
    conf = cfg.loads(BASE + '[emulation]\nfallback = "fail"\n')
    p = make_plan(conf, [AMD_QEMU, arm]).job("linux/arm64").placement
    assert p.kind == "unavailable" and "runner 'arm' unreachable: timeout" in p.reason


def test_no_emulator_registered() -> None:
    bare = runner("local", "linux/amd64")
    p = make_plan(cfg.loads(BASE), [bare]).job("linux/arm64").placement
    assert p.kind == "unavailable" and "ci setup-qemu" in p.reason


def test_capacity_spreads_jobs_over_equal_runners() -> None:
    conf = cfg.loads(BASE.replace('"linux/amd64", "linux/arm64"', '"linux/amd64", "linux/amd64/v2"'))
    a, b = runner("a", "linux/amd64/v3"), runner("b", "linux/amd64/v3")
    plan = make_plan(conf, [a, b])
    assert sorted(j.placement.runner or "" for j in plan.jobs) == ["a", "b"]


def test_only_overrides_config_platforms() -> None:
    plan = make_plan(cfg.loads(BASE), [AMD_QEMU], only=[platforms.parse("linux/arm/v7")])
    assert [j.platform for j in plan.jobs] == ["linux/arm/v7"]
    assert plan.jobs[0].placement.kind == "emulated"


def test_plan_carries_training_gates_publish_and_deploy() -> None:
    text = BASE + """
[model]
train_command = "python train.py"
registered_model = "m"
[model.thresholds.accuracy]
threshold = 0.9
[deploy]
remote = "../deploy.git"
manifests = ["k8s/kustomization.yaml"]
[smoke]
requests = 5
"""
    plan = make_plan(cfg.loads(text, root="/p"), [AMD_QEMU])
    assert plan.training is not None and plan.training.tracking_uri == "sqlite:////p/.maci/mlflow.db"
    assert plan.training.thresholds["accuracy"]["threshold"] == 0.9
    assert "metric accuracy vs champion" in plan.gates
    assert any(g.startswith("smoke: 5 requests") for g in plan.gates)
    assert plan.deploy is not None and plan.deploy.manifests == ["k8s/kustomization.yaml"]
    dumped = plan.model_dump(mode="json")
    assert dumped["jobs"][1]["placement"]["kind"] == "emulated"


def test_runners_for_default_and_engine_filter() -> None:
    conf = cfg.loads(BASE + '[[runners]]\nname = "d"\nengine = "dagger"\nplatform = "arm64"\n')
    assert [r.name for r in runners_for(conf, "docker", "tcp://x:2375")] == ["local"]
    assert runners_for(conf, "docker", "tcp://x:2375")[0].host == "tcp://x:2375"
    dag = runners_for(conf, "dagger")
    assert [(r.name, r.declared) for r in dag] == [("d", "linux/arm64")]  # hostless: the default
    assert [r.name for r in runners_for(conf, None)] == ["d"]
    hosted = cfg.loads(BASE + '[[runners]]\nname = "arm"\nengine = "dagger"\nhost = "tcp://a:1"\n')
    assert [(r.name, r.host) for r in runners_for(hosted, "dagger")] == [
        ("arm", "tcp://a:1"), ("local", "")]
