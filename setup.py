"""Packaging for most_speech: an open speech-text foundation-model toolkit (MoST)."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name):
    lines = (HERE / name).read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith(("#", "-r"))]


setup(
    name="most_speech",
    version="0.1.0",
    description="MoST: speech-text LLMs with a modality-aware mixture of experts",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["most_speech", "most_speech.*"]),
    package_data={"most_speech": ["**/*.json", "**/*.yaml", "**/*.txt"]},
    install_requires=read_requirements("requirements.txt"),
    extras_require={"dev": read_requirements("requirements-dev.txt")},
    entry_points={
        "console_scripts": [
            "most-convert-deepseek=most_speech.models.convert_deepseek:main",
            "most-convert-hubert=most_speech.models.convert_hubert:main",
            "most-dump-features=most_speech.audio.cli:dump_features_main",
            "most-learn-kmeans=most_speech.audio.cli:learn_kmeans_main",
            "most-dump-units=most_speech.audio.cli:dump_units_main",
            "most-prepare-data=most_speech.data.cli:main",
            "most-make-mini-corpus=most_speech.data.mini_corpus:main",
            "most-train-vocoder=most_speech.vocoder.train:main",
            "most-train-phonetic-encoder=most_speech.audio.phonetic_fit:main",
            "most-score=most_speech.scoring.cli:main",
            "most-decode=most_speech.decoding.cli:main",
            "most-export=most_speech.inference.cli:export_main",
            "most-transcribe=most_speech.inference.cli:transcribe_main",
            "most-synthesize=most_speech.inference.cli:synthesize_main",
        ]
    },
)
