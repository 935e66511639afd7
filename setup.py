"""The compiled OTLP decoder (spanpipe.otlp_columns); everything else is in pyproject.toml.

Optional: where no C compiler builds it, the package installs all the same and decodes in Python.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("spanpipe._otlp_columns", ["pipeline/_otlp_columns.c"], optional=True)])
