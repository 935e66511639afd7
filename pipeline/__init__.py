

from importlib.metadata import PackageNotFoundError as _NotInstalled, version as _version

try:
    __version__ = _version("spanpipe")
except _NotInstalled:  # run from a checkout that was never installed
    __version__ = "0+unknown"
