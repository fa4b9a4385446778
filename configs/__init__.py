"""Built-in YAML configs, installed as ``simo_merge.configs`` so the CLI finds them without a checkout."""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent


def builtin_config(name: str) -> Path:
    """Path of the built-in config ``name`` (with or without ``.yaml``)."""
    path = CONFIG_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"no built-in config {name!r} in {CONFIG_DIR}; known: {known}")
    return path
