"""deploy/kubernetes/: valid for a current Kubernetes, and true to the app, the image and uWSGI.

The schema check is kubernetes-validate in strict mode (unknown fields are errors, so a
misspelt `readinessProbes` fails instead of being silently dropped by the cluster). The
rest checks what no schema can: that the probes name routes the app serves, that the
ports agree, that every Secret and ConfigMap key the pod reads exists, that the pod runs
as the image's user with somewhere to write, and that Kubernetes waits long enough for
uWSGI to finish its requests before it kills the pod.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound

from thoughts_backend.app import create_app
from thoughts_backend.config import CODE_DIR, SETTING_NAMES, ConfigError, gather_settings, load_public_key

REPOSITORY = Path(__file__).resolve().parents[2]
MANIFESTS = REPOSITORY / "deploy" / "kubernetes"
DOCKERFILE = REPOSITORY / "docker" / "app" / "Dockerfile"
UWSGI_INI = REPOSITORY / "docker" / "app" / "uwsgi.ini"
START_SERVER = REPOSITORY / "docker" / "app" / "start_server.sh"

# The newest release kubernetes-validate has schemas for; raise it with the pin.
KUBERNETES_VERSION = "1.37.0"
SERVICE_PORT = 8000
# The grace period covers the preStop sleep, then start_server.sh's STOP_TIMEOUT; this
# is left over for uWSGI's master to exit after its workers are done.
GRACE_MARGIN_SECONDS = 5


def in_ci() -> bool:
    return os.environ.get("CI", "") == "true"


def unavailable(reason: str):
    """Skip on a developer's machine; fail in CI, where every test must run."""
    if in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


# The repository's deploy/ and docker/, PyYAML and kubernetes-validate: none is in the image.
pytestmark = pytest.mark.host


def read_yaml(path: Path, all_documents: bool = False):
    """PyYAML is a dev requirement: imported here, so that the image can collect this module."""
    import yaml

    return list(yaml.safe_load_all(path.read_text())) if all_documents else yaml.safe_load(path.read_text())


def manifest_files() -> list[Path]:
    """The resources to apply; kustomization.yaml is kustomize's, not the cluster's."""
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def resources() -> dict[str, dict]:
    """Every resource by kind; each kind appears once in this deployment."""
    if not MANIFESTS.is_dir():
        unavailable(f"{MANIFESTS} is not here (the image's test run has only ThoughtsBackend/)")
    found: dict[str, dict] = {}
    for path in manifest_files():
        for document in read_yaml(path, all_documents=True):
            assert document["kind"] not in found, f"a second {document['kind']} in {path.name}"
            found[document["kind"]] = document
    return found


@pytest.fixture(scope="module")
def pod(resources) -> dict:
    return resources["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["spec"]["containers"]
    return only


@pytest.fixture
def url_map(tmp_path, public_pem):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "PUBLIC_KEY": public_pem})
    return app.url_map.bind("localhost")


def serves(url_map, path: str) -> bool:
    try:
        url_map.match(path, method="GET")
    except (NotFound, MethodNotAllowed):
        return False
    return True


# --- schema --------------------------------------------------------------------------------


def validate(*paths: Path) -> subprocess.CompletedProcess:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        unavailable("kubernetes-validate is not installed (pip install -r requirements-dev.txt)")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
            *(os.path.relpath(path, REPOSITORY) for path in paths),
        ],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
    )


def test_every_manifest_passes_strict_schema_validation(resources):
    result = validate(*manifest_files())
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # A kind without a schema is only a WARN with exit 0: count the passes instead.
    assert len(lines) == len(resources)
    assert all(line.startswith("INFO ") and " passed " in line for line in lines), result.stdout


def test_strict_validation_rejects_a_misspelt_field(tmp_path):
    misspelt = (MANIFESTS / "deployment.yaml").read_text().replace("readinessProbe:", "readinesProbe:")
    (tmp_path / "deployment.yaml").write_text(misspelt)
    result = validate(tmp_path / "deployment.yaml")
    assert result.returncode != 0
    assert "readinesProbe" in result.stdout


def test_kustomization_applies_every_manifest():
    kustomization = read_yaml(MANIFESTS / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == [path.name for path in manifest_files()]


def test_every_kind_the_deployment_needs_is_there(resources):
    assert set(resources) == {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    assert resources["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"


# --- the pod and the app -------------------------------------------------------------------


def test_probes_ask_the_apps_health_routes(container, url_map):
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert serves(url_map, container[probe]["httpGet"]["path"])
        assert container[probe]["httpGet"]["port"] == "http"


def test_one_port_everywhere(resources, container, pod):
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": SERVICE_PORT, "protocol": "TCP"}
    assert resources["ConfigMap"]["data"]["PORT"] == str(SERVICE_PORT)
    assert f"EXPOSE {SERVICE_PORT}" in DOCKERFILE.read_text()
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(SERVICE_PORT)
    (service_port,) = resources["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]


def test_service_ingress_autoscaler_and_budget_find_the_pods(resources, pod):
    deployment = resources["Deployment"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert resources["Service"]["spec"]["selector"].items() <= labels.items()
    assert resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = resources["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    service_name = resources["Service"]["metadata"]["name"]
    port_names = {port["name"] for port in resources["Service"]["spec"]["ports"]}
    for rule in resources["Ingress"]["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service_name
            assert backend["port"]["name"] in port_names


def test_ingress_publishes_the_api_and_keeps_probes_and_metrics_inside(resources, url_map):
    paths = [path for rule in resources["Ingress"]["spec"]["rules"] for path in rule["http"]["paths"]]
    routes = [rule.rule for rule in url_map.map.iter_rules()]
    for path in paths:
        if path["pathType"] == "Exact":
            assert serves(url_map, path["path"]), path
        else:
            assert path["pathType"] == "Prefix"
            assert any(route.startswith(path["path"]) for route in routes), path
    exposed = [path["path"] for path in paths]
    for internal in ("/healthz", "/readyz", "/metrics"):
        assert not any(internal == path or (internal.startswith(path) and path != "/") for path in exposed), (
            f"{internal} is reachable through the Ingress"
        )
    assert {"/api/", "/admin/", "/"} <= set(exposed)


def test_scaled_out_and_rolled_without_losing_capacity(resources):
    deployment = resources["Deployment"]["spec"]
    autoscaler = resources["HorizontalPodAutoscaler"]["spec"]
    assert deployment["replicas"] >= 2
    assert autoscaler["minReplicas"] >= 2
    assert autoscaler["maxReplicas"] > autoscaler["minReplicas"]
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_requests_and_limits_are_set_and_consistent(container, resources):
    resources_ = container["resources"]
    for kind in ("cpu", "memory"):
        assert quantity(resources_["requests"][kind]) <= quantity(resources_["limits"][kind])
    # Utilization is measured against the CPU request, so that must be set.
    (metric,) = resources["HorizontalPodAutoscaler"]["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"


def quantity(value: str) -> float:
    """A Kubernetes quantity as a number: '250m' -> 0.25, '256Mi' -> 268435456."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|)", str(value)).groups()
    return float(number) * units[unit]


# --- configuration and secrets -------------------------------------------------------------


def test_every_key_the_pod_reads_exists(resources, container, pod):
    config_map, secret = resources["ConfigMap"], resources["Secret"]
    secret_keys = set(secret["stringData"])
    for source in container["envFrom"]:
        assert source["configMapRef"]["name"] == config_map["metadata"]["name"]
    for variable in container["env"]:
        reference = variable.get("valueFrom", {})
        if "secretKeyRef" in reference:
            assert reference["secretKeyRef"]["name"] == secret["metadata"]["name"]
            assert reference["secretKeyRef"]["key"] in secret_keys
        elif "configMapKeyRef" in reference:
            assert reference["configMapKeyRef"]["key"] in config_map["data"]
        else:
            assert "value" in variable, variable
    for volume in pod["spec"]["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] == secret["metadata"]["name"]
            assert {item["key"] for item in volume["secret"]["items"]} <= secret_keys


def test_public_key_file_is_where_the_secret_is_mounted(resources, container, pod):
    key_file = Path(resources["ConfigMap"]["data"]["PUBLIC_KEY_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == key_file.parent]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert key_file.name in {item["path"] for item in volume["secret"]["items"]}


def test_every_variable_set_is_one_the_service_reads(resources, container):
    """A misspelt name (TOKEN_LEWAY_SECONDS) would be ignored silently: catch it here."""
    names = set(resources["ConfigMap"]["data"]) | {variable["name"] for variable in container["env"]}
    understood = set(SETTING_NAMES) | names_read_by_the_package() | names_read_by_start_server()
    assert names <= understood, f"set but read by nothing: {sorted(names - understood)}"


def names_read_by_the_package() -> set[str]:
    """Names the app reads straight from os.environ (APP_VERSION, PROMETHEUS_MULTIPROC_DIR)."""
    source = "\n".join(path.read_text() for path in (CODE_DIR / "thoughts_backend").glob("*.py"))
    return set(re.findall(r"environ(?:\.get\(|\[)\"([A-Z][A-Z0-9_]*)\"", source))


def names_read_by_start_server() -> set[str]:
    return set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", start_server_text()))


def start_server_text() -> str:
    if not START_SERVER.exists():
        unavailable(f"{START_SERVER} is not here (the image's test run has only ThoughtsBackend/)")
    return START_SERVER.read_text()


def uwsgi_ini_setting(name: str) -> int:
    """A whole-number option of uwsgi.ini (its default, where an environment variable may override it)."""
    if not UWSGI_INI.exists():
        unavailable(f"{UWSGI_INI} is not here (the image's test run has only ThoughtsBackend/)")
    (value,) = re.findall(rf"^{re.escape(name)}\s*=\s*(\d+)\s*$", UWSGI_INI.read_text(), flags=re.MULTILINE)
    return int(value)


def script_default(name: str) -> str:
    """The default start_server.sh gives a variable: ${NAME:-default}."""
    (value,) = re.findall(rf"\$\{{{name}:-([^}}]+)\}}", start_server_text())
    return value


def test_secret_holds_placeholders_and_never_a_private_key(resources):
    for path in MANIFESTS.iterdir():
        assert "PRIVATE KEY" not in path.read_text(), path
    values = resources["Secret"]["stringData"]
    assert set(values) == {"DATABASE_URL", "public.pem"}
    assert all("REPLACE-ME" in value for value in values.values())


def test_placeholder_key_stops_the_service_with_a_clear_message(resources, tmp_path):
    """Applied unchanged, the pods fail at start saying what is wrong, instead of serving."""
    key_file = tmp_path / "public.pem"
    key_file.write_text(resources["Secret"]["stringData"]["public.pem"])
    with pytest.raises(ConfigError, match="is not a PEM-encoded public key"):
        load_public_key(gather_settings({"PUBLIC_KEY_FILE": str(key_file)}))


# --- the image's user, read-only root, and shutdown ----------------------------------------


def test_pod_runs_as_the_images_user_with_no_privileges(pod, container):
    uid = int(re.search(r"adduser\b[^\n]*-u (\d+)", DOCKERFILE.read_text()).group(1))
    gid = int(re.search(r"addgroup\b[^\n]*-g (\d+)", DOCKERFILE.read_text()).group(1))
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (uid, gid, gid)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_read_only_root_leaves_the_service_somewhere_to_write(pod, container, resources):
    """Every directory that start_server.sh, uWSGI and the app write to is an emptyDir mount."""
    environment = {**resources["ConfigMap"]["data"], **{v["name"]: v.get("value") for v in container["env"]}}
    # With a key given, start_server.sh makes no key pair, so it never writes to ./keys.
    assert environment["PUBLIC_KEY_FILE"]
    written = {
        Path("/tmp"),  # noqa: S108 (the pod's /tmp, for tempfile and the libraries' scratch files)
        # uWSGI's master FIFO, pidfile and sockets
        Path(environment.get("UWSGI_RUN_DIR") or script_default("UWSGI_RUN_DIR")),
        # one file per worker and metric
        Path(environment["PROMETHEUS_MULTIPROC_DIR"]),
    }
    emptydirs = {volume["name"] for volume in pod["spec"]["volumes"] if "emptyDir" in volume}
    writable = {Path(m["mountPath"]) for m in container["volumeMounts"] if m["name"] in emptydirs}
    for directory in written:
        assert any(directory == mount or mount in directory.parents for mount in writable), (
            f"{directory} is written at run time but is not on an emptyDir"
        )


def test_kubernetes_waits_for_prestop_and_the_drain_before_killing(pod, container, resources):
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 5, "endpoints need a few seconds to drop the pod everywhere"
    stop_timeout = int(resources["ConfigMap"]["data"].get("STOP_TIMEOUT") or script_default("STOP_TIMEOUT"))
    # A request uWSGI lets run (harakiri) may finish; a worker asked to stop gets its mercy.
    assert stop_timeout >= uwsgi_ini_setting("harakiri")
    assert stop_timeout >= uwsgi_ini_setting("worker-reload-mercy")
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + stop_timeout + GRACE_MARGIN_SECONDS


def test_the_migration_is_a_step_of_its_own_before_the_service(resources, pod, container):
    """The init container migrates with the service's image, settings and database; the
    service then skips its own start-up migration."""
    (migrate,) = pod["spec"]["initContainers"]
    assert migrate["command"] == ["python", "init_db.py"]
    assert migrate["image"] == container["image"]
    assert migrate["envFrom"] == container["envFrom"]
    database = [variable for variable in container["env"] if variable["name"] == "DATABASE_URL"]
    assert [variable for variable in migrate["env"] if variable["name"] == "DATABASE_URL"] == database
    assert migrate["securityContext"] == container["securityContext"]
    assert resources["ConfigMap"]["data"]["MIGRATE_ON_START"] == "false"
    assert gather_settings({"MIGRATE_ON_START": "false"})["MIGRATE_ON_START"] == "false"
