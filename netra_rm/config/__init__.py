"""Configuration: the shipped defaults, a user file, and environment overrides.

The names below are imported lazily, so ``from netra_rm.config import env`` (which every
start of ``netra-rm`` does, shell completion included) does not load the loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netra_rm.config.load import default_config_text, load_config, validate_file
    from netra_rm.config.model import CheckSettings, Config, Layer, Limits, MachineSettings, Pool

_EXPORTS = {
    "default_config_text": "netra_rm.config.load", "load_config": "netra_rm.config.load",
    "validate_file": "netra_rm.config.load", "CheckSettings": "netra_rm.config.model",
    "Config": "netra_rm.config.model", "Layer": "netra_rm.config.model", "Limits": "netra_rm.config.model",
    "MachineSettings": "netra_rm.config.model", "Pool": "netra_rm.config.model",
}

__all__ = ["CheckSettings", "Config", "Layer", "Limits", "MachineSettings", "Pool", "default_config_text",
           "load_config", "validate_file"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'netra_rm.config' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
