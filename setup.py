"""The C part of filing and sanitising (aggregator/speedups.py says why). Everything else about
the package is in pyproject.toml; setuptools reads extensions only from here."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        # optional: without a C compiler the install goes on, and filing runs in Python
        Extension(
            "aggregator._speedups",
            ["aggregator/_speedups.c", "aggregator/_index.c", "aggregator/_sanitize.c"],
            depends=["aggregator/_speedups.h"],
            optional=True,
        )
    ]
)
