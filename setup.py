from setuptools import find_packages, setup

setup(
    name="glm_megatron",
    version="0.1.0",
    description="Megatron-style pretraining of the GLM model family on megatron-core",
    packages=find_packages(include=["glm_megatron", "glm_megatron.*"]),
    python_requires=">=3.10",
    install_requires=[
        # 2.13 is the tested release; the README's install pins it so pip takes the CPU wheel.
        "torch>=2.4,<2.15",
        # 0.16.x is the newest megatron-core for Python 3.11; 0.14-0.16 share the layer APIs we use.
        "megatron-core>=0.14,<0.17",
        "sentencepiece>=0.2",
        "numpy>=1.24",
        "tensorboard>=2.14",
        "tqdm>=4.60",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "transformers>=4.57", "safetensors>=0.4"],
        # Loading exports with transformers (README: Export to Hugging Face).
        "hf": ["transformers>=4.57", "safetensors>=0.4"],
    },
)
