"""The images' build files, checked statically: the Dockerfiles parse, every COPY source exists in the build
context and is not ignored, the entrypoints are installed by the distributions they copy, the images run as
non-root with every cache on the volume the operator mounts, and the pinned versions agree with what the tests
run. The built images themselves run in the end-to-end tests (tests/e2e, on a real node)."""

import fnmatch
import re
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from prefops_operator.core.children import CACHE_DIR

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {
    "trainer": ROOT / "images" / "trainer" / "Dockerfile",
    "operator": ROOT / "images" / "operator" / "Dockerfile",
}


LOCAL_BASES = ROOT / "scripts" / "images"  # the stand-in bases `make images` builds where no registry is reachable


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


def ignored(path: str) -> bool:
    """Whether .dockerignore leaves ``path`` out of the build context: the last pattern that matches it, or a folder
    above it, decides."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip()[:1] not in ("", "#")]
    for pattern in patterns:
        if any(fnmatch.fnmatch(c, pattern.lstrip("!").replace("**/", "*")) for c in candidates):
            result = not pattern.startswith("!")
    return result


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_every_copy_source_exists_in_the_build_context_and_is_not_ignored(image):
    copies = instructions(IMAGES[image], "COPY")
    assert copies
    for value in copies:
        parts = [p for p in value.split() if not p.startswith("--")]
        for source in parts[:-1]:
            assert (ROOT / source).exists(), f"{image}: COPY {source} (build context is the repository root)"
            assert not ignored(source), f"{image}: COPY {source} is left out by .dockerignore"
    leftovers = ("operator/src/prefops_operator/__pycache__/x.pyc", "operator/src/prefops_operator.egg-info/PKG-INFO")
    assert all(ignored(p) for p in leftovers) and ignored(".venv"), "nothing else goes in"


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_dependencies_are_installed_before_the_sources_are_copied(image):
    """So a change of the sources alone rebuilds only the last layers (seconds, not minutes)."""
    steps = [(i["instruction"], i["value"]) for i in parse(IMAGES[image]).structure]
    src = next(n for n, (kind, value) in enumerate(steps) if kind == "COPY" and "/src " in value)
    installs = [n for n, (kind, value) in enumerate(steps) if kind == "RUN" and "pip install -c" in value]
    assert installs and installs[0] < src


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
    torch = version("torch").split("+")[0]
    base = build_arg(IMAGES["trainer"], "BASE_IMAGE")
    tag_torch = re.match(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda", base)[1]
    assert tag_torch == torch
    assert f"torch=={torch}" in (LOCAL_BASES / "base-torch.Containerfile").read_text(), "and the local stand-in's"
    python_base = build_arg(IMAGES["operator"], "BASE_IMAGE")
    assert python_base.startswith(f"python:{sys.version_info.major}.{sys.version_info.minor}-")


def test_the_trainer_image_sends_every_cache_and_temporary_file_to_the_volume_trainer_pods_mount():
    """Pods run the image on a read-only root: whatever it writes must land under /cache (an emptyDir)."""
    env = parse(IMAGES["trainer"]).envs
    writers = ("HOME", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "HF_HOME", "TORCH_HOME",
               "TORCH_EXTENSIONS_DIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "NUMBA_CACHE_DIR",
               "CUDA_CACHE_PATH", "PREFOPS_CACHE_DIR")  # fmt: skip
    for name in writers:
        assert env.get(name, "").startswith(CACHE_DIR), f"{name}={env.get(name)!r} is not under {CACHE_DIR}"


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
