"""Install genjax from this repository: `pip install -e .` (tests: `pip install -e ".[test]"`).

Note: the PyPI package named `genjax` is an unrelated probabilistic-programming
project; never `pip install genjax`.
"""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "diffrax==0.7.2",
    "equinox==0.13.8",
    "lineax==0.1.1",
    "optimistix==0.1.0",  # imported directly (error norms); also a dependency of diffrax
    "ml-collections==1.1.0",
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "grain==0.2.18",
    "absl-py==2.5.1",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "pillow==13.0.0",
    "matplotlib==3.11.2",
    "tensorboardX==2.6.5",
    "scikit-learn==1.9.1",  # ships the 8x8 digits (configs/digits.py), nothing downloaded
]

setup(
    name="genjax-sde",
    version="0.1.0",
    description="SDE/ODE generative models (diffusion, score matching, PFGM, flows) in JAX/Flax.",
    packages=find_packages(include=["genjax", "genjax.*", "experiments", "experiments.*", "configs"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest==9.2.0", "pytest-xdist==3.8.0"]},
)
