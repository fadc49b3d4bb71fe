"""The installed package's version, for `--version` and GET /version."""

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("adaptive-sarathi")
    except PackageNotFoundError:
        return "unknown (not installed)"
