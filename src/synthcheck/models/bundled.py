"""The models shipped inside the package (`synthcheck/weights/<name>/`), and how a name or path given by a user
becomes a model directory."""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_MODEL = "default"  # the CIFAKE-sized model


def bundled_models() -> dict[str, Path]:
    """Models shipped inside the package (name -> directory)."""
    if not BUNDLED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(BUNDLED_DIR.iterdir()) if (p / "config.json").exists()}


def resolve_model(name_or_path: str | Path | None) -> Path:
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    p = Path(name_or_path)
    if (p / "config.json").exists():
        return p
    if (p / "model" / "config.json").exists():  # a training run directory
        return p / "model"
    bundled = bundled_models()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    raise FileNotFoundError(f"model {name_or_path!r} not found: give a model directory (with config.json) "
                            f"or a bundled name ({', '.join(bundled) or 'none installed'})")
