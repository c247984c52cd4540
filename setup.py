"""Build the compiled preprocessing kernels; everything else lives in pyproject.toml."""

import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "convention_rt._preprocess",
        ["csrc/_preprocess.pyx"],
        include_dirs=[numpy.get_include(), "csrc"],
        depends=["csrc/normalise_frame.h"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
    )
]

setup(ext_modules=cythonize(extensions, language_level=3))
