# Container images: build a model's Apptainer image from containers/{model}.def where Apptainer exists,
# or convert the recipe to a Dockerfile. Run from the repository root: recipes copy the package in from it.
from pathlib import Path

# What every recipe's %files copies in (tests/unit/test_containers.py holds the recipes to it): a change to the
# package rebuilds the images.
CONTAINER_BUILD_CONTEXT = ["pyproject.toml", "README.md", *sorted(str(p) for p in Path("pertcal").rglob("*.py"))]


rule build_container:
    input:
        recipe="containers/{model}.def",
        context=CONTAINER_BUILD_CONTEXT,
    output:
        "containers/{model}.sif",
    wildcard_constraints:
        model="[a-z0-9_]+",
    log:
        "logs/build_container/{model}.log",
    benchmark:
        "benchmarks/build_container/{model}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("build_container"),
    script:
        "../scripts/build_container.py"


rule convert_container:
    input:
        "containers/{model}.def",
    output:
        "containers/docker/{model}.Dockerfile",
    wildcard_constraints:
        model="[a-z0-9_]+",
    log:
        "logs/convert_container/{model}.log",
    benchmark:
        "benchmarks/convert_container/{model}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("convert_container"),
    script:
        "../scripts/convert_container.py"
