"""The images, checked without a Docker engine (none runs on CI machines): the Dockerfiles parse, every COPY
source exists in the build context, the entrypoints are installed by the distributions they copy, the
images run as non-root, and the pinned versions agree with what the tests run."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {
    "trainer": ROOT / "images" / "trainer" / "Dockerfile",
    "operator": ROOT / "images" / "operator" / "Dockerfile",
}


def parse(path: Path) -> DockerfileParser:
    with path.open("rb") as f:
        return DockerfileParser(fileobj=f, cache_content=True)


def instructions(path: Path, name: str) -> list[str]:
    return [i["value"] for i in parse(path).structure if i["instruction"] == name]


def build_arg(path: Path, name: str) -> str:
    values = [v.split("=", 1)[1] for v in instructions(path, "ARG") if v.startswith(f"{name}=")]
    assert values, f"{path}: ARG {name} has a default"
    return values[0]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, pin = line.split("==", 1)
            pins[name.lower().replace("_", "-")] = pin.strip()
    return pins


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dockerfile_parses_with_a_base_user_and_entrypoint(image):
    df = parse(IMAGES[image])
    assert df.baseimage, "FROM resolves to a base image"
    users = instructions(IMAGES[image], "USER")
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image runs as a non-root user"
    assert instructions(IMAGES[image], "ENTRYPOINT")


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_every_copy_source_exists_in_the_build_context(image):
    copies = instructions(IMAGES[image], "COPY")
    assert copies
    for value in copies:
        parts = [p for p in value.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"{image}: COPY {source} (build context is the repository root)"


def test_trainer_entrypoint_is_the_console_script_of_the_copied_distribution():
    project = tomllib.loads((ROOT / "trainer" / "pyproject.toml").read_text())["project"]
    entry = instructions(IMAGES["trainer"], "ENTRYPOINT")[-1]
    assert entry == '["prefops-trainer"]'
    assert project["name"] == "prefops-trainer" and "prefops-trainer" in project["scripts"]
    module = project["scripts"]["prefops-trainer"].split(":")[0]
    assert (ROOT / "trainer" / "src" / Path(*module.split("."))).with_suffix(".py").exists()


def test_operator_entrypoint_module_is_in_the_copied_distribution():
    project = tomllib.loads((ROOT / "operator" / "pyproject.toml").read_text())["project"]
    assert project["name"] == "prefops-operator"
    assert instructions(IMAGES["operator"], "ENTRYPOINT")[-1] == '["python", "-m", "prefops_operator"]'
    assert (ROOT / "operator" / "src" / "prefops_operator" / "__main__.py").exists()


def test_base_image_torch_is_the_version_the_tests_run():
    base = build_arg(IMAGES["trainer"], "BASE_IMAGE")
    tag_torch = re.match(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda", base)[1]
    assert tag_torch == version("torch").split("+")[0]
    python_base = build_arg(IMAGES["operator"], "BASE_IMAGE")
    import sys

    assert python_base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-")


def test_pinned_versions_agree_between_pyprojects_constraints_and_the_environment():
    pins = constraints()
    for dist in ("trainer", "operator"):
        deps = tomllib.loads((ROOT / dist / "pyproject.toml").read_text())["project"]["dependencies"]
        for dep in deps:
            if "==" in dep:
                name, pin = dep.split("==")
                name = name.strip().lower()
                assert pins[name] == pin, f"{dist}/pyproject.toml pins {name}=={pin}, constraints.txt {pins[name]}"
                assert version(name) == pin, f"the tests run {name} {version(name)}, not the pinned {pin}"
    ds = tomllib.loads((ROOT / "trainer" / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert ds["deepspeed"] == [f"deepspeed=={pins['deepspeed']}"] and version("deepspeed") == pins["deepspeed"]
    for image in IMAGES.values():
        assert "-c /opt/prefops/constraints.txt" in image.read_text(), "the image installs with the same pins"
