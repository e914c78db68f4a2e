"""Installs labo_fairseq, the fairseq --user-dir plugin for LABO label regularization."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _pinned_requirements() -> list:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


setup(
    name="labo-fairseq",
    version="0.1.0",
    description="LABO instance-specific label regularization as a fairseq criterion, "
    "with data, training and BLEU evaluation scripts",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["labo_fairseq", "labo_fairseq.*"]),
    python_requires=">=3.10",
    install_requires=_pinned_requirements(),
    entry_points={
        "console_scripts": [
            "labo-prepare=labo_fairseq.data.prepare:main",
            "labo-train=labo_fairseq.pipeline.train:main",
            "labo-evaluate=labo_fairseq.pipeline.evaluate:main",
            "labo-reproduce=labo_fairseq.pipeline.reproduce:main",
        ]
    },
)
