"""The Helm chart (deploy/helm/turnout), checked with a real helm binary and no cluster:
`helm lint --strict`, `helm template` for the default values and each value set under the chart's ci/,
then every rendered object validated, Kubernetes' kinds by `kubernetes-validate --strict`, custom
resources against their published CRDs (vendored). Then what the objects mean: the router config is one
turnout accepts, the gateway's flags are turnout's, the grace period covers the drain, selectors select,
the GPU backend and the endpoint picker are wired to what they serve and read, bad values fail at
install, and the `helm test` pod's completion works against a live server."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from server.config import DnsReplicasConfig, load_config
from server.keys import KeyRing
from server.metrics import Metrics
from tests.deploy.crd_schemas import crd_schemas, validate_custom_resource
from tests.deploy.tools import ROOT, run, tool

CHART = ROOT / "deploy" / "helm" / "turnout"
VALUE_SETS = {"default": None, **{p.name.removesuffix("-values.yaml"): p for p in sorted((CHART / "ci").glob("*-values.yaml"))}}
# The chart's kubeVersion floor, and the newest release kubernetes-validate has schemas for.
KUBE_VERSIONS = ("1.29.0", "1.37.0")
NAMESPACE = "inference"
RELEASE = "turnout"
BACKEND_CONFIGS = {"hf": "backends.hf.config:HFEngineConfig", "openai": "backends.openai.config:OpenAIUpstreamConfig",
                   "tgi": "backends.tgi.config:TGIBackendConfig", "vllm": "backends.vllm:VLLMConfig",
                   "trtllm": "backends.trtllm.config:TRTLLMConfig"}


def test_the_ci_value_sets_cover_the_issue():
    """GPU backend on; HPA + ServiceMonitor + PDB on; InferencePool on (and more)."""
    assert {"gpu-backend", "autoscaling", "inference-pool"} <= set(VALUE_SETS), VALUE_SETS


def helm_template(chart: Path = CHART, values: Path | None = None, *sets: str, check: bool = True):
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSIONS[0]]
    if values:
        args += ["-f", str(values)]
    for item in sets:
        args += ["--set", item]
    return run(tool("helm"), *args, check=check, timeout=30)


@cache
def rendered(name: str) -> tuple[dict, ...]:
    return tuple(doc for doc in yaml.safe_load_all(helm_template(values=VALUE_SETS[name]).stdout) if doc)


def find(docs, kind: str, name: str | None = None) -> dict:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, (kind, name, [d["metadata"]["name"] for d in docs if d["kind"] == kind])
    return matches[0]


def component(docs, kind: str, name: str) -> dict:
    """The object of `kind` whose component label is `name` (gateway, gpu-backend, endpoint-picker)."""
    matches = [d for d in docs if d["kind"] == kind
               and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == name]
    assert len(matches) == 1, (kind, name, matches)
    return matches[0]


def gateway(docs) -> dict:
    return component(docs, "Deployment", "gateway")


def container(deployment: dict) -> dict:
    [main] = deployment["spec"]["template"]["spec"]["containers"]
    return main


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


# -- the pipeline CI runs --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", VALUE_SETS)
def test_helm_lint_strict(name):
    values = ["-f", str(VALUE_SETS[name])] if VALUE_SETS[name] else []
    done = run(tool("helm"), "lint", "--strict", str(CHART), *values, "--kube-version", KUBE_VERSIONS[0], timeout=30)
    assert "0 chart(s) failed" in done.stdout, done.stdout


def validate_manifests(path: Path, docs) -> list[str]:
    """Every object in the rendered file, validated: Kubernetes' kinds by kubernetes-validate --strict for
    each Kubernetes version, custom resources against the vendored CRDs. Returns the problems."""
    args = [tool("kubernetes-validate"), "--strict"]
    for version in KUBE_VERSIONS:
        args += ["-k", version]
    done = run(*args, str(path), check=False, timeout=60)
    problems = [line for line in done.stdout.splitlines() if line.startswith(("ERROR", "FATAL"))]
    unknown = {m.group(1) for m in re.finditer(r"Couldn't find schema for kind (\S+)", done.stdout)}
    if done.returncode != 0 and not problems:
        problems.append(f"kubernetes-validate exited {done.returncode}: {done.stdout}{done.stderr}")
    custom_kinds = {kind for _, kind in crd_schemas()}
    problems += [f"{kind}: neither a Kubernetes kind nor a vendored CRD" for kind in unknown - custom_kinds]
    passed = re.findall(r"passed for resource (\S+)", done.stdout)
    builtin = [d for d in docs if d["kind"] not in custom_kinds]
    if len(passed) != len(builtin) * len(KUBE_VERSIONS):
        problems.append(f"kubernetes-validate passed {len(passed)} objects, expected {len(builtin)} x {len(KUBE_VERSIONS)}")
    for doc in docs:
        if doc["kind"] in custom_kinds:
            try:
                validate_custom_resource(doc)
            except (jsonschema.ValidationError, KeyError) as exc:
                problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {getattr(exc, 'message', exc)}")
    return problems


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_validates(name, tmp_path):
    path = tmp_path / f"{name}.yaml"
    path.write_text(helm_template(values=VALUE_SETS[name]).stdout)
    assert validate_manifests(path, rendered(name)) == []


EXPECTED_KINDS = {
    "default": {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "Pod"},
    "gpu-backend": {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "Pod"},
    "autoscaling": {"ServiceAccount", "ConfigMap", "Secret", "Service", "Deployment", "PodDisruptionBudget",
                    "HorizontalPodAutoscaler", "ServiceMonitor", "Pod"},
    "inference-pool": {"ServiceAccount", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "Pod",
                       "InferencePool", "Role", "RoleBinding"},
}


@pytest.mark.parametrize("name", EXPECTED_KINDS)
def test_each_value_set_renders_what_it_turns_on(name):
    assert {d["kind"] for d in rendered(name)} == EXPECTED_KINDS[name]
    assert all(d["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE for d in rendered(name))


# -- what the objects mean -------------------------------------------------------------------------------

def router_config(docs, tmp_path: Path):
    path = tmp_path / "models.yaml"
    path.write_text(find(docs, "ConfigMap", f"{RELEASE}")["data"]["models.yaml"])
    return load_config(path)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_router_config_is_one_turnout_accepts(name, tmp_path):
    config = router_config(rendered(name), tmp_path)  # raises ConfigError, quoting the bad field
    for model in config.models:
        module, cls = BACKEND_CONFIGS[model.backend].split(":")
        fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
        for options in model.replica_options():
            assert set(options) <= fields, (model.name, set(options) - fields)


def serve_parser() -> argparse.ArgumentParser:
    from server.cli import _serve_parser

    parser = argparse.ArgumentParser(exit_on_error=False)
    _serve_parser(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_gateway_runs_turnout_serve_with_flags_it_has(name):
    docs = rendered(name)
    main = container(gateway(docs))
    args = serve_parser().parse_args(["serve", *main["args"]])
    assert args.config == "/etc/turnout/config/models.yaml"
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in gateway(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/etc/turnout/config"]]["configMap"]["name"] == RELEASE
    assert (args.port, args.host) == (8000, "0.0.0.0")
    service = component(docs, "Service", "gateway")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    container_ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert container_ports["http"] == args.port and ports["http"]["targetPort"] == "http"
    if args.grpc_port:
        assert container_ports["grpc"] == args.grpc_port and ports["grpc"]["targetPort"] == "grpc"
    else:
        assert "grpc" not in ports and "grpc" not in container_ports


@pytest.mark.parametrize("name", ["default", "autoscaling"])
def test_the_grace_period_covers_the_pre_stop_pause_and_the_drain(name):
    values = yaml.safe_load((CHART / "values.yaml").read_text())["server"]
    if VALUE_SETS[name]:
        values |= yaml.safe_load(VALUE_SETS[name].read_text()).get("server", {})
    pod = gateway(rendered(name))["spec"]["template"]["spec"]
    main = container(gateway(rendered(name)))
    args = serve_parser().parse_args(["serve", *main["args"]])
    assert args.drain_timeout == values["drainTimeoutSeconds"]
    assert main["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(values["preStopSleepSeconds"])]
    assert pod["terminationGracePeriodSeconds"] == (values["preStopSleepSeconds"] + values["drainTimeoutSeconds"]
                                                    + values["terminationMarginSeconds"])
    assert pod["terminationGracePeriodSeconds"] > args.drain_timeout + values["preStopSleepSeconds"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_liveness_is_health_and_readiness_is_ready(name):
    main = container(gateway(rendered(name)))
    assert main["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert main["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_selectors_select_the_gateway_pods(name):
    docs = rendered(name)
    deployment = gateway(docs)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert selects(component(docs, "Service", "gateway")["spec"]["selector"], labels)
    assert selects(find(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], labels)
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_autoscaling_scrape_and_disruption_budget():
    docs = rendered("autoscaling")
    deployment, service = gateway(docs), component(docs, "Service", "gateway")
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    hpa = find(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    metrics = {m["type"]: m for m in hpa["metrics"]}
    assert metrics["Resource"]["resource"]["target"]["averageUtilization"] == 75
    assert metrics["Pods"]["pods"]["metric"]["name"] == "turnout_num_requests_waiting"
    assert "turnout_num_requests_waiting" in Metrics().exposition().decode()  # a name /metrics has
    monitor = find(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    assert find(docs, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 1, "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}


def test_api_keys_from_a_keys_file_the_chart_makes(tmp_path):
    docs = rendered("autoscaling")
    main = container(gateway(docs))
    args = serve_parser().parse_args(["serve", *main["args"]])
    secret = find(docs, "Secret")
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(secret["stringData"]["keys.yaml"])
    ring = KeyRing.from_file(keys_file)  # what turnout reads at start
    assert sorted(key.name for key in ring.keys) == ["team-a", "team-b"]
    mount = next(m for m in main["volumeMounts"] if args.api_keys.startswith(m["mountPath"] + "/"))
    volume = next(v for v in gateway(docs)["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert volume["secret"]["items"] == [{"key": "keys.yaml", "path": Path(args.api_keys).name}]
    test_env = {e["name"]: e for e in find(docs, "Pod")["spec"]["containers"][0]["env"]}
    assert test_env["TURNOUT_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "turnout-test-key", "key": "api-key"}


def test_a_single_api_key_from_the_users_secret():
    docs = rendered("gpu-backend")
    for env in (container(gateway(docs))["env"], find(docs, "Pod")["spec"]["containers"][0]["env"]):
        key = next(e for e in env if e["name"] == "TURNOUT_API_KEY")
        assert key["valueFrom"]["secretKeyRef"] == {"name": "turnout-api-key", "key": "api-key"}
    assert not [d for d in docs if d["kind"] == "Secret"]  # the user's Secret, not one of ours


@pytest.mark.parametrize("name, engine", [("gpu-backend", "vllm"), ("trtllm-backend", "trtllm")])
def test_the_gateway_routes_a_model_to_the_gpu_backend(name, engine, tmp_path):
    docs = rendered(name)
    gpu = component(docs, "Deployment", "gpu-backend")
    [server] = gpu["spec"]["template"]["spec"]["containers"]
    assert server["command"] == (["vllm", "serve"] if engine == "vllm" else ["trtllm-serve"])
    assert server["args"][0] == "/models/llama-3.1-8b-instruct"
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert server["startupProbe"]["httpGet"]["path"] == "/health"
    pause = int(server["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pause > 5 + 5  # the gateways' DNS refresh and CoreDNS's TTL, so they stop sending to it first
    assert gpu["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == pause + 60
    config = router_config(docs, tmp_path)
    [remote] = [m for m in config.models if m.backend == "openai"]
    assert remote.name == "llama-3.1-8b"
    # The upstream id: what vllm serves under --served-model-name, or trtllm-serve under its model path.
    upstream = "llama-3.1-8b" if engine == "vllm" else "/models/llama-3.1-8b-instruct"
    assert remote.options["model"] == upstream
    if engine == "vllm":
        assert "--served-model-name=llama-3.1-8b" in server["args"]
    host, port = re.fullmatch(r"http://([^:/]+):(\d+)/v1", remote.options["url"]).groups()
    service = component(docs, "Service", "gpu-backend")
    assert service["metadata"]["name"] == host
    assert service["spec"]["clusterIP"] == "None"  # headless: one A record per ready GPU pod
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert selects(service["spec"]["selector"], gpu["spec"]["template"]["metadata"]["labels"])
    waits = [c for c in gateway(docs)["spec"]["template"]["spec"].get("initContainers", [])
             if c["name"] == "wait-for-gpu-backend"]
    if name == "gpu-backend":  # the default: each GPU pod a replica, from the Service's DNS name
        assert remote.replicas_from_dns == DnsReplicasConfig(host, int(port), 5.0)
        assert config.router.policy == "prefix_affinity"
        assert not waits  # nothing to wait for: the model is unready until a pod joins
    else:  # one listed replica: turnout checks it at start, so the gateway waits for it
        assert remote.replicas_from_dns is None and len(remote.replicas) == 1
        assert waits and f"http://{host}:{port}/health" in str(waits[0]["env"])


def test_the_inference_pool_selects_the_gateway_and_its_picker_reads_turnouts_gauges():
    docs = rendered("inference-pool")
    pool = find(docs, "InferencePool")
    deployment = gateway(docs)
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert selects(pool["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    numbers = [p["number"] for p in pool["spec"]["targetPorts"]]
    assert len(set(numbers)) == len(numbers)  # the CRD's CEL rule: unique port numbers
    assert set(numbers) <= {p["containerPort"] for p in container(deployment)["ports"]}
    ref = pool["spec"]["endpointPickerRef"]
    assert ref["kind"] == "Service" and "port" in ref  # the CRD's CEL rule: a Service reference has a port
    picker_service = find(docs, "Service", ref["name"])
    assert ref["port"]["number"] in {p["port"] for p in picker_service["spec"]["ports"]}
    picker = component(docs, "Deployment", "endpoint-picker")
    assert selects(picker_service["spec"]["selector"], picker["spec"]["template"]["metadata"]["labels"])
    args = container(picker)["args"]
    assert f"--pool-name={pool['metadata']['name']}" in args and f"--pool-namespace={NAMESPACE}" in args
    assert "--ha-enable-leader-election" in args  # 2 replicas
    config = yaml.safe_load(find(docs, "ConfigMap", picker["metadata"]["name"])["data"]["plugins.yaml"])
    extractor = next(p for p in config["plugins"] if p["type"] == "core-metrics-extractor")["parameters"]
    [engine] = [e for e in extractor["engineConfigs"] if e["name"] == extractor["defaultEngine"]]
    read = {engine[k] for k in ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec", "loraSpec")}
    # (a counter's `_created` series is typed gauge too: its creation time, nothing a picker reads)
    exposed = set(re.findall(r"^# TYPE (vllm:\S+(?<!_created)) gauge", Metrics().exposition().decode(), re.M))
    assert read == exposed == {"vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
                               "vllm:lora_requests_info"}
    role = find(docs, "Role")
    assert {"inferencepools", "pods"} <= {r for rule in role["rules"] for r in rule["resources"]}


# -- bad values fail at install; a broken chart fails CI --------------------------------------------------

BAD_VALUES = [
    (["router.policy=random"], "/router/policy"),
    (["router.affinity_load_factor=0.5"], "/router/affinity_load_factor"),
    (["models[0].name=m", "models[0].backend=hf", "models[0].replicas_from_dns.port=8000"],
     "/models/0/backend"),  # DNS replicas for a remote backend only
    (["models[0].backend=llamacpp"], "/models/0/backend"),
    (["models[0].backend=openai", "models[0].options.url=host:8000"], "/models/0/options/url"),
    (["service.httpPort=70000"], "/service/httpPort"),
    (["replicas=3"], "additional properties 'replicas'"),
    (["apiKeys.mode=single"], "/apiKeys/key"),
    (["apiKeys.mode=file", "apiKeys.existingSecret=k"], "/apiKeys/testKeySecret/name"),
    (["apiKeys.mode=file", "apiKeys.keys[0].name=a", "apiKeys.keys[0].hash=plaintext"], "/apiKeys/keys/0/hash"),
    (["gpuBackend.enabled=true", "gpuBackend.image.tag=v1"], "/gpuBackend/model"),
    (["autoscaling.enabled=true", "autoscaling.minReplicas=5", "autoscaling.maxReplicas=3"], "above autoscaling.maxReplicas"),
    (["models[0].name=a", "models[0].backend=hf", "models[0].fallback[0]=nowhere"], "not a model here"),
    (["podDisruptionBudget.maxUnavailable=null"], "/podDisruptionBudget"),
    (["server.drainTimeoutSeconds=-1"], "/server/drainTimeoutSeconds"),
    (["inferencePool.endpointPicker.failureMode=Sometimes"], "/inferencePool/endpointPicker/failureMode"),
]


@pytest.mark.parametrize("sets, message", BAD_VALUES, ids=[" ".join(s) for s, _ in BAD_VALUES])
def test_bad_values_fail_at_install(sets, message):
    done = helm_template(CHART, None, *sets, check=False)
    assert done.returncode != 0, done.stdout[:2000]
    assert message in done.stderr, done.stderr


def broken_copy(tmp_path: Path, template: str, old: str, new: str) -> Path:
    chart = tmp_path / "turnout"
    shutil.copytree(CHART, chart)
    path = chart / "templates" / template
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    return chart


def test_a_chart_rendering_an_invalid_object_fails(tmp_path):
    chart = broken_copy(tmp_path, "deployment.yaml", "replicas: {{ .Values.replicaCount }}",
                        "replicas: {{ .Values.replicaCount | quote }}")
    path = tmp_path / "out.yaml"
    path.write_text(helm_template(chart).stdout)
    problems = validate_manifests(path, [d for d in yaml.safe_load_all(path.read_text()) if d])
    assert any("spec.replicas" in p for p in problems), problems


def test_a_chart_rendering_an_invalid_custom_resource_fails(tmp_path):
    chart = broken_copy(tmp_path, "inferencepool.yaml", "  targetPorts:\n    - number: 8000",
                        "  targetPorts:\n    - port: 8000")
    path = tmp_path / "out.yaml"
    path.write_text(helm_template(chart, VALUE_SETS["inference-pool"]).stdout)
    problems = validate_manifests(path, [d for d in yaml.safe_load_all(path.read_text()) if d])
    assert any(p.startswith("InferencePool/") for p in problems), problems


def test_a_chart_that_does_not_render_fails_lint(tmp_path):
    chart = broken_copy(tmp_path, "service.yaml", "{{- end }}", "")
    done = run(tool("helm"), "lint", "--strict", str(chart), check=False, timeout=30)
    assert done.returncode != 0


# -- helm test ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed_server(bundled_model_dir):
    from backends.hf.backend import HFBackend
    from backends.hf.config import HFEngineConfig
    from server.router import Router
    from tests.server_thread import ServerThread

    backend = HFBackend(HFEngineConfig(model=str(bundled_model_dir), served_model_name="turnout-tiny", num_threads=1))
    server = ServerThread({"turnout-tiny": backend},
                          router=Router({"turnout-tiny": backend}, keys=KeyRing.single("test-key"))).start()
    yield server
    server.stop()


def test_the_helm_test_pod_sends_a_real_completion(keyed_server):
    pod = find(rendered("default"), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [check] = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in check["env"]}
    assert env["TURNOUT_URL"] == f"http://{RELEASE}:8000" and env["TURNOUT_MODEL"] == "turnout-tiny"
    assert check["command"][:2] == ["python", "-c"]

    def run_check(**extra):
        return subprocess.run([sys.executable, "-c", check["command"][2]], capture_output=True, text=True, timeout=120,
                              env={"TURNOUT_URL": keyed_server.url, "TURNOUT_MODEL": env["TURNOUT_MODEL"], **extra})

    done = run_check(TURNOUT_API_KEY="test-key")
    assert done.returncode == 0, done.stderr
    assert re.match(r"turnout-tiny: \d+ tokens: ", done.stdout), done.stdout
    refused = run_check()  # no key: a 401, and the test fails
    assert refused.returncode != 0 and "401" in refused.stderr


# -- values.yaml documents itself -----------------------------------------------------------------------

# Kubernetes' own objects, passed through as they are: their fields are Kubernetes' to document.
KUBERNETES_OBJECTS = {"podSecurityContext", "securityContext", "resources"}


def test_values_yaml_documents_every_field_of_the_chart():
    """Each top-level field and each field under it has a comment of its own (`# -- ...`) right above."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    parent, undocumented = None, []
    for i, line in enumerate(lines):
        key = re.match(r"^( {0,2})([A-Za-z_][\w.-]*):", line)
        if not key:
            continue
        if not key.group(1):
            parent = key.group(2)
        elif parent in KUBERNETES_OBJECTS:
            continue
        if not lines[i - 1].lstrip().startswith("# "):
            undocumented.append(f"values.yaml:{i + 1}: {line.strip()}")
    assert not undocumented, "\n".join(undocumented)
