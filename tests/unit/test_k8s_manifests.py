"""The Kubernetes manifests in deploy/k8s agree with the Kubernetes API and with the code.

No cluster is available where the tests run, so each manifest is validated offline against
the Kubernetes JSON schemas bundled with ``kubernetes-validate``; the KEDA ScaledObject, a
custom resource with no bundled schema, is checked by hand (and the HPA KEDA makes of it
against the schema). Then the manifests are held against what they depend on, as
test_deploy_files.py does for Docker: ``Settings`` fields, the ``vfstream`` argument parser,
the routes the web server registers, the image's user, and each other's names and labels.

Two sets of resources are told apart: what ``kubectl apply -k deploy/k8s`` applies (the
main kustomization's resources) and the optional kustomize components under
``components/`` (static AWS keys). A workload must run with the first alone; what it reads
from anything else must be an optional reference.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from aiohttp import web
from pydantic import SecretStr, ValidationError

from tests.unit.test_deploy_files import (
    ENV_NAME,
    ENV_PREFIX,
    IMAGE_ENV,
    STAGE,
    only,
    parses,
    settings_from,
)
from vfstream.settings import Settings

try:
    import kubernetes_validate
except ImportError:  # a failure below, never a skip
    kubernetes_validate = None

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
KUSTOMIZATION = K8S_DIR / "kustomization.yaml"
README = K8S_DIR / "README.md"
STATIC_AWS_KEYS = "components/static-aws-keys"

# The oldest and the newest Kubernetes version the manifests are validated against; both are
# bundled with kubernetes-validate 1.37.0 (the pin of the dev extras).
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
MISSING_VALIDATOR = (
    "kubernetes-validate is not installed: `pip install kubernetes-validate==1.37.0` "
    "(or `pip install -e '.[dev]'`)"
)

COMMON_LABELS = {"app.kubernetes.io/name": "vfstream", "app.kubernetes.io/part-of": "vfstream"}
COMPONENT = "app.kubernetes.io/component"
# Values the downward API gives a pod, for resolving the env of a worker in the tests.
NAMESPACE = "vfstream-test"
ORDINAL = 0
# The label Kubernetes puts on every namespace, its name: what a NetworkPolicy can select.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# The routes the web server answers without a token (Settings.web_auth_tokens: "every route
# but /health and /ready"): the kubelet's probes carry none.
OPEN_ROUTES = frozenset({"/health", "/ready"})
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[^:\s]+:role/\S+")


# ---- reading the manifests ---------------------------------------------------------------


def kustomization_files() -> list[Path]:
    """The main kustomization and every component's."""
    return sorted(K8S_DIR.rglob("kustomization.yaml"))


def manifest_files() -> list[Path]:
    """Every manifest under deploy/k8s, the components' included."""
    return sorted(p for p in K8S_DIR.rglob("*.y*ml") if p.name != KUSTOMIZATION.name)


def relative(path: Path) -> str:
    return path.relative_to(K8S_DIR).as_posix()


def load_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file, resource) for every resource of every manifest, empty documents dropped."""
    documents = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                assert isinstance(doc, dict), f"{relative(path)}: a document is not a mapping"
                documents.append((relative(path), doc))
    return documents


def listed_files(kustomization: Path) -> list[str]:
    """The files a kustomization's resources name, relative to deploy/k8s."""
    resources = yaml.safe_load(kustomization.read_text()).get("resources") or []
    return [relative(kustomization.parent / name) for name in resources]


DOCUMENTS = load_documents()
RESOURCES = [doc for _, doc in DOCUMENTS]
TEXTS = {relative(path): path.read_text() for path in manifest_files()}
# What `kubectl apply -k deploy/k8s` applies, and what enabling the static-keys component adds.
APPLIED = [doc for name, doc in DOCUMENTS if name in listed_files(KUSTOMIZATION)]
WITH_STATIC_KEYS = APPLIED + [
    doc
    for name, doc in DOCUMENTS
    if name in listed_files(K8S_DIR / STATIC_AWS_KEYS / KUSTOMIZATION.name)
]


def resource_id(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def the(kind: str, component: str | None = None) -> dict[str, Any]:
    """The one resource of ``kind`` (for one component, when given)."""
    found = [
        doc
        for doc in RESOURCES
        if doc["kind"] == kind
        and (component is None or doc["metadata"]["labels"].get(COMPONENT) == component)
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
    return found[0]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in RESOURCES if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"no {kind} named {name}"
    return found[0]


def find(kind: str, name: str, applied: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The resource among those ``applied``, or None."""
    found = [d for d in applied if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) <= 1, f"two {kind}s named {name}"
    return found[0] if found else None


WORKLOADS = [doc for doc in RESOURCES if doc["kind"] in ("StatefulSet", "Deployment")]
WORKER = the("StatefulSet", "worker")
LISTENER = the("Deployment", "listener")
BRIDGE = the("Deployment", "bridge")
CONFIG = the("ConfigMap")
SCALED = the("ScaledObject")
ACCOUNT = the("ServiceAccount")
POLICY = the("NetworkPolicy")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{resource_id(workload)}: expected one container"
    return containers[0]


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    assert "data" not in secret, f"{resource_id(secret)}: use stringData, not base64 data"
    return {key: str(value) for key, value in (secret.get("stringData") or {}).items()}


def downward(field_path: str, workload: dict[str, Any]) -> str:
    values = {
        "metadata.name": f"{workload['metadata']['name']}-{ORDINAL}",
        "metadata.namespace": NAMESPACE,
    }
    assert field_path in values, f"{resource_id(workload)}: unexpected fieldRef {field_path}"
    return values[field_path]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: only variables defined before this one are replaced."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def source_data(kind: str, ref: dict[str, Any], applied: list[dict[str, Any]]) -> dict[str, str]:
    """The keys of a referenced ConfigMap or Secret; none for a missing optional one (the
    kubelet starts the container without it), a failure for a missing required one."""
    found = find(kind, ref["name"], applied)
    if found is None:
        assert ref.get("optional") is True, f"{kind} {ref['name']} is required but not applied"
        return {}
    if kind == "Secret":
        return secret_data(found)
    return {key: str(value) for key, value in (found.get("data") or {}).items()}


def container_env(
    workload: dict[str, Any], applied: list[dict[str, Any]] = APPLIED
) -> dict[str, str]:
    """What the container's process sees when ``applied`` is what the cluster holds: the
    image's ENV, then envFrom, then env."""
    spec = container(workload)
    env = {name: value for name, value in IMAGE_ENV.items() if name.startswith(ENV_PREFIX)}
    for source in spec.get("envFrom") or []:
        assert "prefix" not in source, "a prefix would hide the VFSTREAM_ names"
        if "configMapRef" in source:
            env.update(source_data("ConfigMap", source["configMapRef"], applied))
        else:
            env.update(source_data("Secret", source["secretRef"], applied))
    for item in spec.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[item["name"]] = downward(source["fieldRef"]["fieldPath"], workload)
            continue
        kind, ref = (
            ("Secret", source["secretKeyRef"])
            if "secretKeyRef" in source
            else ("ConfigMap", source["configMapKeyRef"])
        )
        data = source_data(kind, ref, applied)
        if ref["key"] in data:
            env[item["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional") is True, f"{kind} {ref['name']} has no {ref['key']}"
    return env


def settings_of(
    workload: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    applied: list[dict[str, Any]] = APPLIED,
) -> Settings:
    """Settings exactly as the workload's container would read them, once the operator has
    replaced the web token placeholder (Settings refuses the placeholder itself: see
    ``test_the_shipped_web_token_placeholder_stops_the_worker``)."""
    env = container_env(workload, applied)
    env = {
        k: (OPERATOR_TOKEN if k == WEB_TOKENS_ENV and "change-me" in v else v)
        for k, v in env.items()
    }
    return settings_from({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}, monkeypatch)


WEB_TOKENS_ENV = f"{ENV_PREFIX}WEB_AUTH_TOKENS"
OPERATOR_TOKEN = "generated-by-openssl-rand-hex-32"


def test_the_shipped_web_token_placeholder_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Applied unchanged, the placeholder would guard the API with a known token: the worker
    refuses it at start instead."""
    env = container_env(WORKER, APPLIED)
    assert "change-me" in env[WEB_TOKENS_ENV]
    with pytest.raises(ValidationError, match=WEB_TOKENS_ENV):
        settings_from({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}, monkeypatch)


COMMENTED_SETTING = re.compile(rf"^\s*#\s*({ENV_PREFIX}[A-Z0-9_]+):\s*(\S.*?)\s*$", re.M)


def commented_settings(text: str) -> dict[str, str]:
    """The `# VFSTREAM_...: "value"` lines of a manifest: examples to uncomment."""
    return {name: str(yaml.safe_load(value)) for name, value in COMMENTED_SETTING.findall(text)}


def with_secured_kafka() -> list[dict[str, Any]]:
    """The applied resources with the ConfigMap's commented Kafka security example taken."""
    example = {
        name: value
        for name, value in commented_settings(TEXTS["configmap.yaml"]).items()
        if name.startswith(f"{ENV_PREFIX}KAFKA_")
    }
    assert f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL" in example, "no secured example to take"
    secured = copy.deepcopy(CONFIG)
    secured["data"].update(example)
    return [secured if doc is CONFIG else doc for doc in APPLIED]


def env_sources(workload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, reference) of every ConfigMap and Secret the pod reads: env, envFrom, volumes."""
    spec = container(workload)
    sources: list[tuple[str, dict[str, Any]]] = []
    for source in spec.get("envFrom") or []:
        if "configMapRef" in source:
            sources.append(("ConfigMap", source["configMapRef"]))
        else:
            sources.append(("Secret", source["secretRef"]))
    for item in spec.get("env") or []:
        value_from = item.get("valueFrom", {})
        if "secretKeyRef" in value_from:
            sources.append(("Secret", value_from["secretKeyRef"]))
        elif "configMapKeyRef" in value_from:
            sources.append(("ConfigMap", value_from["configMapKeyRef"]))
    for volume in pod_spec(workload).get("volumes") or []:
        if "secret" in volume:
            secret = volume["secret"]
            sources.append(("Secret", {"name": secret["secretName"], **secret}))
        elif "configMap" in volume:
            sources.append(("ConfigMap", volume["configMap"]))
    return sources


def secret_volume_mounts(workload: dict[str, Any], secret: str) -> list[dict[str, Any]]:
    """The container's mounts of a volume made of the Secret ``secret``."""
    volumes = {
        volume["name"]
        for volume in pod_spec(workload).get("volumes") or []
        if volume.get("secret", {}).get("secretName") == secret
    }
    return [m for m in container(workload).get("volumeMounts") or [] if m["name"] in volumes]


def secret_holding(key: str) -> str:
    """The name of the one Secret manifest holding ``key``."""
    names = [s["metadata"]["name"] for s in of_kind("Secret") if key in secret_data(s)]
    assert len(names) == 1, f"{key} is in {len(names)} Secrets"
    return names[0]


def references(workload: dict[str, Any], kind: str, name: str) -> list[dict[str, Any]]:
    return [ref for k, ref in env_sources(workload) if k == kind and ref["name"] == name]


def env_names_used() -> set[str]:
    """Every env name the manifests set: container env, ConfigMap keys and Secret keys."""
    names: set[str] = set()
    for workload in WORKLOADS:
        names |= {item["name"] for item in container(workload).get("env") or []}
    for config in of_kind("ConfigMap"):
        names |= set(config.get("data") or {})
    for secret in of_kind("Secret"):
        names |= set(secret_data(secret))
    return names


def registered_routes() -> set[str]:
    """The paths vfstream.web.routes registers, recorded by a stand-in for the Faust app."""
    from vfstream.web.routes import register_views

    paths: list[str] = []

    def page(path: str) -> Any:
        paths.append(path)
        return lambda view: view

    # A real aiohttp application: what the views hang on it (hooks, middlewares) works.
    app = SimpleNamespace(page=page, web=SimpleNamespace(web_app=web.Application()))
    register_views(SimpleNamespace(app=app, settings=Settings()))
    return set(paths)


def named_port(workload: dict[str, Any], name: str) -> int:
    ports = {p.get("name"): p["containerPort"] for p in container(workload).get("ports") or []}
    assert name in ports, f"{resource_id(workload)} has no port named {name}"
    return int(ports[name])


def selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|k|M|G|Ki|Mi|Gi)?")
UNITS = {None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def quantity(value: str | int) -> float:
    match = QUANTITY.fullmatch(str(value))
    assert match, f"not a quantity this test understands: {value!r}"
    return float(match[1]) * UNITS[match[2]]


def image_user() -> tuple[str, int, int]:
    """The image's USER with the uid and gid the Dockerfile gives it."""
    user = only(STAGE, "USER").split(":")[0]
    runs = " ".join(args for keyword, args in STAGE if keyword == "RUN")
    useradd = re.search(rf"useradd\b[^&;]*--uid\s+(\d+)[^&;]*\s{user}\b", runs)
    groupadd = re.search(rf"groupadd\b[^&;]*--gid\s+(\d+)\s+{user}\b", runs)
    assert useradd and groupadd, f"the Dockerfile creates no user and group {user} with ids"
    return user, int(useradd[1]), int(groupadd[1])


def validate(doc: dict[str, Any], version: str) -> None:
    if kubernetes_validate is None:
        pytest.fail(MISSING_VALIDATOR)
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(top)"
        problem = (
            f"{resource_id(doc)} is invalid for Kubernetes {version} at {where}: {exc.message}"
        )
    else:
        return
    pytest.fail(problem)  # outside the except: the schema dump of the chained error is noise


def scaled_hpa() -> dict[str, Any]:
    """The HorizontalPodAutoscaler KEDA creates for the ScaledObject (its scaling part)."""
    spec = SCALED["spec"]
    trigger = spec["triggers"][0]
    hpa_spec: dict[str, Any] = {
        "scaleTargetRef": spec["scaleTargetRef"],
        "minReplicas": spec["minReplicaCount"],
        "maxReplicas": spec["maxReplicaCount"],
        "metrics": [
            {
                "type": "External",
                "external": {
                    "metric": {"name": f"s0-kafka-{trigger['metadata']['topic']}"},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": trigger["metadata"]["lagThreshold"],
                    },
                },
            }
        ],
    }
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        hpa_spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"keda-hpa-{SCALED['metadata']['name']}"},
        "spec": hpa_spec,
    }


# ---- the Kubernetes API --------------------------------------------------------------------


def test_kubernetes_validate_is_installed() -> None:
    if kubernetes_validate is None:
        pytest.fail(MISSING_VALIDATOR)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "doc",
    [doc for doc in RESOURCES if doc["kind"] != "ScaledObject"],
    ids=[f"{name}:{resource_id(doc)}" for name, doc in DOCUMENTS if doc["kind"] != "ScaledObject"],
)
def test_every_manifest_is_valid_against_the_kubernetes_schema(
    doc: dict[str, Any], version: str
) -> None:
    validate(doc, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_autoscaler_keda_makes_of_the_scaled_object_is_valid(version: str) -> None:
    validate(scaled_hpa(), version)


def test_the_scaled_object_is_a_keda_kafka_trigger_on_the_worker_statefulset() -> None:
    assert SCALED["apiVersion"] == "keda.sh/v1alpha1"
    assert set(SCALED) == {"apiVersion", "kind", "metadata", "spec"}
    spec = SCALED["spec"]
    known = {
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "minReplicaCount",
        "maxReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    }
    assert set(spec) <= known, f"not ScaledObject fields: {sorted(set(spec) - known)}"
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": WORKER["metadata"]["name"],
    }
    assert spec["minReplicaCount"] == 1
    assert isinstance(spec["maxReplicaCount"], int) and spec["maxReplicaCount"] >= 1
    if "advanced" in spec:
        assert set(spec["advanced"]) <= {
            "horizontalPodAutoscalerConfig",
            "restoreToOriginalReplicaCount",
            "scalingModifiers",
        }
    triggers = spec["triggers"]
    assert len(triggers) == 1
    trigger = triggers[0]
    assert set(trigger) <= {"type", "name", "metadata", "authenticationRef", "metricType"}
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    # Trigger metadata is a map of strings: an unquoted number is refused by the CRD.
    assert all(isinstance(value, str) for value in metadata.values()), metadata
    assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= set(metadata)
    assert int(metadata["lagThreshold"]) > 0
    assert metadata.get("allowIdleConsumers", "false") == "false"


# ---- kustomize -----------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", kustomization_files(), ids=relative)
def test_each_kustomization_lists_every_yaml_file_in_its_folder(kustomization: Path) -> None:
    content = yaml.safe_load(kustomization.read_text())
    if kustomization == KUSTOMIZATION:
        assert content["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
        assert content["kind"] == "Kustomization"
    else:
        assert content["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
        assert content["kind"] == "Component", "an optional part is a kustomize component"
    listed = listed_files(kustomization)
    assert len(listed) == len(set(listed)), "a file is listed twice"
    beside = {relative(p) for p in manifest_files() if p.parent == kustomization.parent}
    assert set(listed) == beside


def test_every_component_is_offered_in_the_kustomization_and_explained() -> None:
    components = [relative(p.parent) for p in kustomization_files() if p != KUSTOMIZATION]
    assert STATIC_AWS_KEYS in components
    kustomization, readme = KUSTOMIZATION.read_text(), README.read_text()
    for component in components:
        # Enabled by uncommenting one line of the main kustomization.
        assert re.search(rf"^#?\s*-\s*{re.escape(component)}\s*$", kustomization, re.M), component
        assert component in readme, f"README.md does not explain {component}"
    for enabled in yaml.safe_load(kustomization).get("components") or []:
        assert enabled in components, f"{enabled} is not a component of deploy/k8s"


def test_every_resource_has_a_unique_kind_and_name() -> None:
    ids = [resource_id(doc) for doc in RESOURCES]
    assert len(ids) == len(set(ids)), ids


def test_no_resource_pins_a_namespace() -> None:
    # `kubectl apply -k deploy/k8s -n <ns>` or a kustomize namespace decides.
    assert not [resource_id(doc) for doc in RESOURCES if "namespace" in doc["metadata"]]


# ---- settings ------------------------------------------------------------------------------


def test_every_env_name_is_a_real_setting() -> None:
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    set_here = {name for name in env_names_used() if name.startswith(ENV_PREFIX)}
    texts = [*TEXTS.values(), README.read_text()]
    mentioned = {name for text in texts for name in ENV_NAME.findall(text)}
    assert {f"{ENV_PREFIX}KAFKA_BOOTSTRAP", f"{ENV_PREFIX}DATA_DIR"} <= set_here
    unknown = sorted((set_here | mentioned) - fields)
    assert not unknown, f"not Settings fields (silently ignored at runtime): {unknown}"


def test_other_env_names_only_feed_a_vfstream_setting() -> None:
    for workload in WORKLOADS:
        env = container(workload).get("env") or []
        helpers = [item["name"] for item in env if not item["name"].startswith(ENV_PREFIX)]
        values = " ".join(str(item.get("value", "")) for item in env)
        for name in helpers:
            assert f"$({name})" in values, f"{resource_id(workload)}: {name} is set for nothing"


@pytest.mark.parametrize("workload", WORKLOADS, ids=resource_id)
def test_each_container_environment_is_accepted_by_settings(
    workload: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(workload, monkeypatch)
    assert settings.kafka_bootstrap == CONFIG["data"][f"{ENV_PREFIX}KAFKA_BOOTSTRAP"]
    assert settings.aws_endpoint_url == CONFIG["data"][f"{ENV_PREFIX}AWS_ENDPOINT_URL"]


@pytest.mark.parametrize("workload", WORKLOADS, ids=resource_id)
def test_without_static_keys_aws_credentials_come_from_the_default_chain(
    workload: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(workload, monkeypatch)
    assert settings.aws_access_key_id is None and settings.aws_secret_access_key is None
    kwargs = settings.aws_client_kwargs()
    assert "aws_access_key_id" not in kwargs, "explicit keys would shadow the pod's role"


@pytest.mark.parametrize("workload", WORKLOADS, ids=resource_id)
def test_the_static_keys_component_gives_every_container_both_keys(
    workload: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_of(workload, monkeypatch, WITH_STATIC_KEYS)
    keys = secret_data(named("Secret", secret_holding(f"{ENV_PREFIX}AWS_ACCESS_KEY_ID")))
    assert settings.aws_access_key_id == keys[f"{ENV_PREFIX}AWS_ACCESS_KEY_ID"]
    assert settings.aws_secret_access_key is not None
    assert settings.aws_client_kwargs()["aws_access_key_id"] == settings.aws_access_key_id


def test_a_required_reference_is_applied_and_an_optional_one_is_documented() -> None:
    readme = README.read_text()
    for workload in WORKLOADS:
        for kind, ref in env_sources(workload):
            where = f"{resource_id(workload)}: {kind} {ref['name']}"
            found = find(kind, ref["name"], APPLIED)
            if ref.get("optional") is True:
                # Made out of band or by a component: the operator must learn its name.
                assert ref["name"] in readme, f"{where} is optional and unexplained"
                continue
            assert found is not None, f"{where} is required but `apply -k` makes none"
            if "key" in ref:
                data = secret_data(found) if kind == "Secret" else found["data"]
                assert ref["key"] in data, f"{where} has no key {ref['key']}"


def test_static_aws_keys_are_an_optional_secret_not_applied_by_default() -> None:
    name = secret_holding(f"{ENV_PREFIX}AWS_ACCESS_KEY_ID")
    assert find("Secret", name, APPLIED) is None, "static keys would shadow IRSA"
    assert find("Secret", name, WITH_STATIC_KEYS) is not None
    assert f"{ENV_PREFIX}AWS_SECRET_ACCESS_KEY" in secret_data(named("Secret", name))
    for workload in WORKLOADS:
        refs = references(workload, "Secret", name)
        assert refs, f"{resource_id(workload)} cannot take static keys"
        assert all(ref.get("optional") is True for ref in refs), resource_id(workload)


def test_every_workload_reads_the_kafka_credentials_as_an_optional_secret() -> None:
    name = secret_holding(f"{ENV_PREFIX}KAFKA_SASL_PASSWORD")
    for workload in WORKLOADS:
        refs = references(workload, "Secret", name)
        assert refs, f"{resource_id(workload)} does not read {name}"
        assert all(ref.get("optional") is True for ref in refs), resource_id(workload)


def test_credentials_live_in_secrets_with_placeholder_values_only() -> None:
    secret_fields = {
        f"{ENV_PREFIX}{name.upper()}"
        for name, field in Settings.model_fields.items()
        if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ()))
    } | {f"{ENV_PREFIX}AWS_ACCESS_KEY_ID"}
    assert secret_fields >= {
        f"{ENV_PREFIX}AWS_SECRET_ACCESS_KEY",
        f"{ENV_PREFIX}SLACK_WEBHOOK_URL",
        f"{ENV_PREFIX}KAFKA_SASL_PASSWORD",
        f"{ENV_PREFIX}WEB_AUTH_TOKENS",
    }
    in_secrets = {key: value for s in of_kind("Secret") for key, value in secret_data(s).items()}
    assert set(in_secrets) <= secret_fields, "a setting that is no credential in a Secret"
    # Every credential has its place in a Secret manifest: a key, or a commented one for the
    # rarely needed (a session token, an encrypted key's password).
    secret_files = {name for name, doc in DOCUMENTS if doc["kind"] == "Secret"}
    offered = set(in_secrets)
    for name in secret_files:
        offered |= set(commented_settings(TEXTS[name])) & secret_fields
    assert offered == secret_fields, f"no Secret offers {sorted(secret_fields - offered)}"
    for config in of_kind("ConfigMap"):
        assert not secret_fields & set(config["data"]), "a credential in a ConfigMap"
    examples = commented_settings(TEXTS["configmap.yaml"])
    assert not secret_fields & set(examples), "a credential in the ConfigMap's examples"
    for workload in WORKLOADS:
        literal = {item["name"] for item in container(workload).get("env") or [] if "value" in item}
        assert not secret_fields & literal, f"{resource_id(workload)}: a credential in plain env"
    for key, value in in_secrets.items():
        assert "change-me" in value, f"{key} must stay a placeholder in git"


# ---- commands ------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", WORKLOADS, ids=resource_id)
def test_every_container_runs_a_real_vfstream_subcommand(workload: dict[str, Any]) -> None:
    spec = container(workload)
    assert spec.get("command", ["vfstream"]) == ["vfstream"], "run through the console script"
    parses([str(arg) for arg in spec.get("args", [])])


@pytest.mark.parametrize(
    ("workload", "subcommand"),
    [(WORKER, "worker"), (LISTENER, "listen"), (BRIDGE, "bridge")],
    ids=["worker", "listener", "bridge"],
)
def test_each_workload_runs_the_command_it_is_for(
    workload: dict[str, Any], subcommand: str
) -> None:
    assert container(workload)["args"][0] == subcommand


def test_every_container_runs_the_same_pinned_vfstream_image() -> None:
    images = {container(workload)["image"] for workload in WORKLOADS}
    assert len(images) == 1, images
    image = images.pop()
    name, _, tag = image.rpartition(":")
    assert name.rsplit("/", 1)[-1] == "vfstream", image
    assert tag and tag != "latest" and "/" not in tag, f"{image} is not pinned to a tag"


# ---- ports, probes and addresses -----------------------------------------------------------


def test_worker_port_is_the_web_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(WORKER, monkeypatch)
    assert named_port(WORKER, "http") == settings.web_port
    assert [p["containerPort"] for p in container(WORKER)["ports"]] == [settings.web_port]
    assert settings.web_host == "0.0.0.0", "the other pods and the Services must reach it"


def test_probes_ask_routes_the_web_server_registers_on_the_web_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = container(WORKER)
    routes = registered_routes()
    web_port = settings_of(WORKER, monkeypatch).web_port
    expected = {"startupProbe": "/health", "livenessProbe": "/health", "readinessProbe": "/ready"}
    for probe, path in expected.items():
        get = spec[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["path"] in routes, f"{probe}: {get['path']} is not a route of vfstream.web.views"
        # The kubelet sends no token: a probe of a guarded route would fail with 401.
        assert get["path"] in OPEN_ROUTES, f"{probe}: {get['path']} asks for a token"
        assert "httpHeaders" not in get, f"{probe}: no credential belongs in a pod spec"
        port = get["port"]
        assert (named_port(WORKER, port) if isinstance(port, str) else port) == web_port, probe


def test_the_startup_probe_gives_the_worker_minutes_before_liveness_counts() -> None:
    probe = container(WORKER)["startupProbe"]
    allowed = (
        probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
    )
    assert allowed >= 180, f"{allowed}s to start before the pod is restarted"
    liveness = container(WORKER)["livenessProbe"]
    assert liveness["periodSeconds"] * liveness.get("failureThreshold", 3) >= 30


def test_nothing_in_the_manifests_scrapes_the_api_without_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics_public = settings_of(WORKER, monkeypatch).web_metrics_public
    monitors = [doc for doc in RESOURCES if doc["kind"] in ("ServiceMonitor", "PodMonitor")]
    scraped = [
        resource_id(doc)
        for doc in [*WORKLOADS, *of_kind("Service")]
        if (doc["spec"].get("template", doc)["metadata"].get("annotations") or {}).get(
            "prometheus.io/scrape"
        )
        == "true"
    ]
    if monitors or scraped:
        assert metrics_public, f"{scraped or monitors} scrape a /metrics that asks for a token"
    # KEDA measures lag in Kafka, not through the workers' HTTP API.
    assert [trigger["type"] for trigger in SCALED["spec"]["triggers"]] == ["kafka"]


def test_the_listener_and_the_bridge_serve_no_http() -> None:
    for workload in (LISTENER, BRIDGE):
        spec = container(workload)
        assert "ports" not in spec
        assert not {"startupProbe", "livenessProbe", "readinessProbe"} & set(spec)


@pytest.mark.parametrize("service", of_kind("Service"), ids=resource_id)
def test_services_select_the_workers_http_port(
    service: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    selector = service["spec"]["selector"]
    assert selects(selector, WORKER)
    assert not selects(selector, LISTENER) and not selects(selector, BRIDGE)
    web_port = settings_of(WORKER, monkeypatch).web_port
    (port,) = service["spec"]["ports"]
    target = port["targetPort"]
    assert (named_port(WORKER, target) if isinstance(target, str) else target) == web_port
    assert port["name"] == "http" and port["port"] == web_port


def test_the_statefulsets_service_is_headless_and_publishes_unready_pods() -> None:
    headless = named("Service", WORKER["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    # A recovering or rebalancing worker still needs its DNS name: table views are proxied
    # to it, and it answers them itself (503 with a retry hint) until it is ready.
    assert headless["spec"]["publishNotReadyAddresses"] is True
    api = [s for s in of_kind("Service") if s is not headless]
    assert len(api) == 1 and api[0]["spec"].get("clusterIP") != "None"
    assert api[0]["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_workers_advertise_their_stable_dns_name_in_the_headless_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = container(WORKER)["env"]
    fields = {
        item["name"]: item["valueFrom"]["fieldRef"]["fieldPath"]
        for item in env
        if "fieldRef" in item.get("valueFrom", {})
    }
    assert fields == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    order = [item["name"] for item in env]
    advertised = order.index(f"{ENV_PREFIX}WEB_ADVERTISED_HOST")
    assert order.index("POD_NAME") < advertised and order.index("POD_NAMESPACE") < advertised
    settings = settings_of(WORKER, monkeypatch)
    pod = f"{WORKER['metadata']['name']}-{ORDINAL}"
    host = f"{pod}.{WORKER['spec']['serviceName']}.{NAMESPACE}.svc.cluster.local"
    assert settings.web_advertised_host == host
    assert settings.advertised_web_url == f"http://{host}:{settings.web_port}"


def test_the_state_volume_is_mounted_at_the_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = str(settings_of(WORKER, monkeypatch).data_dir)
    (claim,) = WORKER["spec"]["volumeClaimTemplates"]
    mounts = {m["mountPath"]: m["name"] for m in container(WORKER)["volumeMounts"]}
    assert mounts.get(data_dir) == claim["metadata"]["name"], f"{data_dir} is not the claim"
    assert data_dir == IMAGE_ENV[f"{ENV_PREFIX}DATA_DIR"], "the directory the image prepares"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert quantity(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30


# ---- identity: the ServiceAccount and its AWS role -----------------------------------------


@pytest.mark.parametrize("workload", WORKLOADS, ids=resource_id)
def test_every_workload_runs_as_the_vfstream_service_account(workload: dict[str, Any]) -> None:
    assert find("ServiceAccount", ACCOUNT["metadata"]["name"], APPLIED) is ACCOUNT
    pod = pod_spec(workload)
    assert pod.get("serviceAccountName") == ACCOUNT["metadata"]["name"], resource_id(workload)
    # vfstream never calls the Kubernetes API; IRSA and Pod Identity project their own token.
    assert pod.get("automountServiceAccountToken") is False, resource_id(workload)


def test_the_service_account_names_an_iam_role_for_irsa() -> None:
    annotations = ACCOUNT["metadata"].get("annotations") or {}
    assert IRSA_ANNOTATION in annotations, "no IRSA role annotation"
    assert ROLE_ARN.fullmatch(annotations[IRSA_ANNOTATION]), annotations[IRSA_ANNOTATION]
    assert ACCOUNT.get("automountServiceAccountToken") is False
    assert "Pod Identity" in TEXTS["serviceaccount.yaml"], "the alternative must be explained"


# ---- Kafka security ------------------------------------------------------------------------


def test_the_default_kafka_connection_is_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CONFIG["data"][f"{ENV_PREFIX}KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    for workload in WORKLOADS:
        settings = settings_of(workload, monkeypatch)
        assert settings.kafka_security_protocol == "PLAINTEXT"
        assert settings.kafka_sasl_mechanism is None


@pytest.mark.parametrize("workload", WORKLOADS, ids=resource_id)
def test_every_workload_mounts_the_optional_kafka_tls_secret_read_only(
    workload: dict[str, Any],
) -> None:
    refs = references(workload, "Secret", "vfstream-kafka-tls")
    assert refs, f"{resource_id(workload)} has no Kafka TLS volume"
    assert all(ref.get("optional") is True for ref in refs), "a cluster without TLS has none"
    mounts = secret_volume_mounts(workload, "vfstream-kafka-tls")
    assert len(mounts) == 1 and mounts[0].get("readOnly") is True, mounts


def test_the_secured_kafka_example_is_accepted_with_the_kafka_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for workload in WORKLOADS:
        settings = settings_of(workload, monkeypatch, with_secured_kafka())
        assert settings.kafka_security_protocol == "SASL_SSL"
        assert settings.kafka_sasl_mechanism is not None
        assert settings.kafka_sasl_username and settings.kafka_sasl_password is not None
        assert settings.kafka_ssl_cafile is not None, "the example shows the CA file"


@pytest.mark.parametrize("secured", [False, True], ids=["default", "secured-example"])
@pytest.mark.parametrize("workload", WORKLOADS, ids=resource_id)
def test_the_kafka_tls_files_named_in_the_config_map_are_mounted(
    workload: dict[str, Any], secured: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    applied = with_secured_kafka() if secured else APPLIED
    settings = settings_of(workload, monkeypatch, applied)
    (mount,) = secret_volume_mounts(workload, "vfstream-kafka-tls")
    (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
    items = {item["path"] for item in volume["secret"].get("items") or []}
    for path in (
        settings.kafka_ssl_cafile,
        settings.kafka_ssl_certfile,
        settings.kafka_ssl_keyfile,
    ):
        if path is None:
            continue
        assert str(path.parent) == mount["mountPath"], f"{path} is not in the mounted Secret"
        assert not items or path.name in items, f"{path.name} is not a file of the volume"


# ---- the HTTP API's tokens -----------------------------------------------------------------


def test_the_worker_requires_the_web_tokens_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    name = secret_holding(f"{ENV_PREFIX}WEB_AUTH_TOKENS")
    assert find("Secret", name, APPLIED) is not None
    refs = references(WORKER, "Secret", name)
    assert refs, "the worker does not read the web tokens"
    # Required: a worker without its tokens stays down rather than serve fan data openly.
    assert all(ref.get("optional") is not True for ref in refs)
    assert settings_of(WORKER, monkeypatch).web_tokens, "the worker would serve an open API"


def test_only_the_worker_which_serves_http_gets_the_web_tokens() -> None:
    name = secret_holding(f"{ENV_PREFIX}WEB_AUTH_TOKENS")
    for workload in (LISTENER, BRIDGE):
        assert not references(workload, "Secret", name), resource_id(workload)
        assert f"{ENV_PREFIX}WEB_AUTH_TOKENS" not in container_env(workload)


# ---- the NetworkPolicy ---------------------------------------------------------------------


def peer_matches(peer: dict[str, Any], namespace: str, pod_labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy peer admits a pod with these labels in ``namespace`` (the
    policy's own namespace is NAMESPACE; a namespace's labels are its name label)."""
    assert set(peer) <= {"podSelector", "namespaceSelector"}, f"not understood here: {peer}"
    for selector in peer.values():
        assert set(selector) <= {"matchLabels"}, f"not understood here: {selector}"

    def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        return (selector.get("matchLabels") or {}).items() <= labels.items()

    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], {NAMESPACE_NAME_LABEL: namespace}):
            return False
    elif namespace != NAMESPACE:  # a podSelector alone: the policy's own namespace
        return False
    return matches(peer.get("podSelector", {}), pod_labels)


def admits(namespace: str, port: int, pod_labels: dict[str, str] | None = None) -> bool:
    """Whether the NetworkPolicy lets a pod of ``namespace`` reach a worker on ``port``."""
    for rule in POLICY["spec"].get("ingress") or []:
        ports = rule.get("ports")
        port_ok = ports is None or any(
            (named_port(WORKER, p["port"]) if isinstance(p["port"], str) else p["port"]) == port
            and p.get("protocol", "TCP") == "TCP"
            for p in ports
        )
        peers = rule.get("from")
        peer_ok = peers is None or any(
            peer_matches(peer, namespace, pod_labels or {}) for peer in peers
        )
        if port_ok and peer_ok:
            return True
    return False


def ingress_namespaces() -> set[str]:
    return {
        peer["namespaceSelector"]["matchLabels"][NAMESPACE_NAME_LABEL]
        for rule in POLICY["spec"]["ingress"]
        for peer in rule.get("from") or []
        if "namespaceSelector" in peer
    }


def test_the_network_policy_guards_the_workers_only() -> None:
    selector = POLICY["spec"]["podSelector"]
    assert set(selector) == {"matchLabels"}
    assert selects(selector["matchLabels"], WORKER)
    assert not selects(selector["matchLabels"], LISTENER)
    assert not selects(selector["matchLabels"], BRIDGE)


def test_the_network_policy_leaves_egress_to_kafka_and_aws_alone() -> None:
    for policy in of_kind("NetworkPolicy"):
        assert policy["spec"]["policyTypes"] == ["Ingress"], resource_id(policy)
        assert "egress" not in policy["spec"], resource_id(policy)


def test_the_namespace_and_the_ingress_namespace_reach_the_web_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    web_port = settings_of(WORKER, monkeypatch).web_port
    (ingress,) = ingress_namespaces()
    assert ingress and ingress != NAMESPACE
    assert ingress in README.read_text(), "README.md must say which namespace to change"
    # The other workers proxy table views to a key's owner on this port.
    worker_labels = WORKER["spec"]["template"]["metadata"]["labels"]
    assert admits(NAMESPACE, web_port, worker_labels)
    assert admits(NAMESPACE, web_port, {"app": "some-client"})
    assert admits(ingress, web_port, {"app.kubernetes.io/name": "ingress-nginx"})


def test_other_namespaces_and_other_ports_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    web_port = settings_of(WORKER, monkeypatch).web_port
    (ingress,) = ingress_namespaces()
    for namespace in ("default", "kube-system", "monitoring"):
        assert not admits(namespace, web_port), namespace
    for namespace in (NAMESPACE, ingress):
        assert not admits(namespace, web_port + 1), f"{namespace} reaches another port"


# ---- scaling and the single-instance processes ---------------------------------------------


def test_workers_leave_notifications_to_the_single_listener(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert settings_of(WORKER, monkeypatch).listen_for_notifications is False
    assert LISTENER["spec"]["replicas"] == 1
    assert "VFSTREAM_LISTEN_FOR_NOTIFICATIONS" in TEXTS["statefulset.yaml"]


def test_the_bridge_runs_alone_and_is_recreated_not_rolled() -> None:
    assert BRIDGE["spec"]["replicas"] == 1
    assert BRIDGE["spec"]["strategy"] == {"type": "Recreate"}


def test_the_statefulset_leaves_its_replica_count_to_keda() -> None:
    assert "replicas" not in WORKER["spec"], "an apply would reset what KEDA scaled to"


def test_keda_caps_the_workers_at_the_partition_count(monkeypatch: pytest.MonkeyPatch) -> None:
    assert f"{ENV_PREFIX}TOPIC_PARTITIONS" in CONFIG["data"]
    settings = settings_of(WORKER, monkeypatch)
    assert SCALED["spec"]["maxReplicaCount"] == settings.topic_partitions


def test_keda_watches_the_workers_consumer_group_on_the_score_record_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_of(WORKER, monkeypatch)
    metadata = SCALED["spec"]["triggers"][0]["metadata"]
    assert metadata["consumerGroup"] == settings.app_id, "Faust's group id is the app id"
    assert metadata["topic"] == settings.score_records_topic
    assert metadata["bootstrapServers"] == settings.kafka_bootstrap
    assert metadata.get("offsetResetPolicy") == "earliest", "as the workers' consumer"


# ---- running it ----------------------------------------------------------------------------


def test_workers_get_a_grace_period_longer_than_a_flush_and_faust_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grace = pod_spec(WORKER)["terminationGracePeriodSeconds"]
    assert grace >= 60
    assert grace > 2 * settings_of(WORKER, monkeypatch).session_timeout_seconds


def test_a_disruption_budget_lets_one_worker_go_at_a_time() -> None:
    budget = the("PodDisruptionBudget")
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": WORKER["spec"]["selector"]["matchLabels"]},
    }


@pytest.mark.parametrize("workload", WORKLOADS, ids=resource_id)
def test_every_pod_runs_as_the_images_non_root_user(workload: dict[str, Any]) -> None:
    user, uid, gid = image_user()
    pod = pod_spec(workload)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid), f"the image's {user}"
    # The state volume (workers) must be writable by the user, and the AWS token IRSA or Pod
    # Identity projects and the Kafka TLS files readable (every pod).
    assert pod.get("fsGroup") == gid, f"{resource_id(workload)}: fsGroup is not {gid}"
    spec = container(workload)
    context = spec["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context.get("runAsUser", uid) == uid
    assert "ALL" in context["capabilities"]["drop"]
    if context.get("readOnlyRootFilesystem"):
        mounts = {m["mountPath"] for m in spec.get("volumeMounts") or []}
        assert "/tmp" in mounts, "a read-only root needs a writable /tmp"


@pytest.mark.parametrize("workload", WORKLOADS, ids=resource_id)
def test_every_container_requests_and_limits_cpu_and_memory(workload: dict[str, Any]) -> None:
    resources = container(workload)["resources"]
    for kind in ("cpu", "memory"):
        request = quantity(resources["requests"][kind])
        limit = quantity(resources["limits"][kind])
        assert 0 < request <= limit, f"{kind}: request {request} above limit {limit}"


def test_every_resource_carries_the_common_labels() -> None:
    for doc in RESOURCES:
        labels = doc["metadata"].get("labels") or {}
        assert COMMON_LABELS.items() <= labels.items(), resource_id(doc)
        assert labels.get(COMPONENT), f"{resource_id(doc)} has no component label"
    for workload in WORKLOADS:
        template = workload["spec"]["template"]["metadata"]["labels"]
        assert template == workload["metadata"]["labels"], resource_id(workload)
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selects(selector, workload), f"{resource_id(workload)} selects not its pods"
        others = [w for w in WORKLOADS if w is not workload]
        assert not any(selects(selector, other) for other in others), resource_id(workload)


def test_the_readme_explains_the_apply_and_every_manifest() -> None:
    text = README.read_text()
    assert "kubectl apply -k deploy/k8s" in text
    for path in manifest_files():
        assert relative(path) in text, f"README.md does not mention {relative(path)}"
    assert f"{ENV_PREFIX}TOPIC_PARTITIONS" in text
