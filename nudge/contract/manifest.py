"""Model manifests: the one record of what a model reads and how it was made.

Training writes a ``manifest.json`` beside each ``model.onnx``; the server loads it and
refuses a model whose manifest is malformed or whose ONNX file does not match its sha256.
The feature order a model expects lives only here (``features``, in input order).

Layout: ``MODELS/<name>/<version>/{model.onnx,manifest.json}``; versions sort as strings
(UTC timestamp + short hash), so the newest is the largest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
# The propensity's reason tables beside its model: written by training/reasons.py, read by
# service/reasons.py.
REASONS_FILE = "reasons.json"
REASONS_FORMAT = "nudge.propensity_reasons/1"
SCHEMA_VERSION = 1


class ManifestError(ValueError):
    """A manifest or model directory that must not be served."""


@dataclass(frozen=True)
class FeatureInput:
    """One Feast feature the model reads: ``ref`` is "view:feature"; arrays span ``size`` columns."""

    ref: str
    size: int = 1


@dataclass(frozen=True)
class Manifest:
    """What a model reads, outputs and was trained on (see module docstring)."""

    name: str
    version: str
    feature_service: str
    features: tuple[FeatureInput, ...]
    input_name: str
    output_name: str
    output_width: int
    onnx_sha256: str
    created_at: str
    label: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def feature_refs(self) -> list[str]:
        """Feature refs in model-input order."""
        return [f.ref for f in self.features]

    def to_json(self) -> str:
        data = asdict(self)
        data["features"] = [asdict(f) for f in self.features]
        return json.dumps(data, indent=2, sort_keys=True)


_REQUIRED = {
    "name": str,
    "version": str,
    "feature_service": str,
    "features": list,
    "input_name": str,
    "output_name": str,
    "output_width": int,
    "onnx_sha256": str,
    "created_at": str,
}


def parse_manifest(data: dict[str, Any], source: str = "manifest") -> Manifest:
    """Build a Manifest from decoded JSON, naming every missing or mistyped key."""
    problems = [
        f"'{key}' missing" if key not in data else f"'{key}' should be {kind.__name__}"
        for key, kind in _REQUIRED.items()
        if not isinstance(data.get(key), kind)
    ]
    if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        problems.append(f"schema_version {data.get('schema_version')} is not {SCHEMA_VERSION}")
    features: list[FeatureInput] = []
    for i, item in enumerate(data.get("features") or []):
        ref, size = (item.get("ref"), item.get("size", 1)) if isinstance(item, dict) else (None, None)
        if not isinstance(ref, str) or ":" not in ref or not isinstance(size, int) or size < 1:
            problems.append(f"features[{i}] should be {{'ref': 'view:feature', 'size': n >= 1}}")
        else:
            features.append(FeatureInput(ref, size))
    if not problems and not features:
        problems.append("'features' is empty")
    if problems:
        raise ManifestError(f"{source}: invalid manifest: " + "; ".join(problems))
    known = {k: data[k] for k in Manifest.__dataclass_fields__ if k in data and k != "features"}
    return Manifest(features=tuple(features), **known)


def write_model_dir(version_dir: Path, onnx_bytes: bytes, manifest: Manifest) -> None:
    """Write model.onnx and manifest.json; the manifest's sha256 must describe these bytes."""
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.onnx_sha256:
        raise ManifestError("manifest sha256 does not match the ONNX bytes being written")
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / MODEL_FILE).write_bytes(onnx_bytes)
    (version_dir / MANIFEST_FILE).write_text(manifest.to_json() + "\n")


def input_columns(features: Sequence[FeatureInput]) -> list[str]:
    """One name per model-input column: the feature ref, with ``[i]`` for an array's columns."""
    return [f.ref if f.size == 1 else f"{f.ref}[{i}]" for f in features for i in range(f.size)]


def read_json_object(path: Path, error: type[ManifestError] = ManifestError) -> dict[str, Any]:
    """A JSON object file beside a model (its manifest, its reason tables), or ``error`` saying
    what is wrong with it: missing, not JSON, not an object."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise error(f"{path}: missing") from exc
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: not a JSON object")
    return data


def load_model_dir(version_dir: Path) -> tuple[Manifest, bytes]:
    """Load and check one version directory: the manifest parses and the ONNX sha256 matches."""
    manifest_path = version_dir / MANIFEST_FILE
    model_path = version_dir / MODEL_FILE
    data = read_json_object(manifest_path)
    manifest = parse_manifest(data, str(manifest_path))
    if manifest.version != version_dir.name:
        raise ManifestError(
            f"{manifest_path}: version {manifest.version!r} != directory {version_dir.name!r}"
        )
    try:
        onnx_bytes = model_path.read_bytes()
    except FileNotFoundError as exc:
        raise ManifestError(f"{model_path}: missing") from exc
    actual = hashlib.sha256(onnx_bytes).hexdigest()
    if actual != manifest.onnx_sha256:
        raise ManifestError(
            f"{model_path}: sha256 {actual[:12]}… does not match manifest {manifest.onnx_sha256[:12]}…"
        )
    return manifest, onnx_bytes


def latest_version_dir(models_dir: Path, name: str) -> Path:
    """The newest version directory of model ``name`` (versions sort as strings)."""
    root = models_dir / name
    versions = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if not versions:
        raise ManifestError(
            f"no versions of model '{name}' under {root}; train them first (nudge train --out {models_dir})"
        )
    return versions[-1]
