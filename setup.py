"""Shim so that `pip install .` and editable installs work with older tooling."""
import setuptools

setuptools.setup()
