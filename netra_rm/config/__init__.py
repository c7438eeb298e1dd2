"""Configuration: the shipped defaults, a user file, and environment overrides."""

from __future__ import annotations

from netra_rm.config.load import default_config_text, load_config, validate_file
from netra_rm.config.model import CheckSettings, Config, Layer, Limits, MachineSettings, Pool

__all__ = ["CheckSettings", "Config", "Layer", "Limits", "MachineSettings", "Pool", "default_config_text",
           "load_config", "validate_file"]
