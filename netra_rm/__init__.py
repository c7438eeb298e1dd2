"""netra-rm: decide whether a test layer may run now, and on what.

The public API is imported lazily, so ``import netra_rm`` (and the command line) stays
fast and loads no service driver until a check needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ResourceManagementAgent": "netra_rm.agent",
    "create_resource_manager": "netra_rm.agent",
    "ensure_layer_resources_available": "netra_rm.agent",
    "ResourceRequirements": "netra_rm.core.model",
    "NetraRMError": "netra_rm.errors",
    "ServiceUnavailableError": "netra_rm.errors",
    "ExitCode": "netra_rm.errors",
    "Engine": "netra_rm.core.engine",
    "load_config": "netra_rm.config",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:
    from netra_rm.agent import ResourceManagementAgent, create_resource_manager, ensure_layer_resources_available
    from netra_rm.config import load_config
    from netra_rm.core.engine import Engine
    from netra_rm.core.model import ResourceRequirements
    from netra_rm.errors import ExitCode, NetraRMError, ServiceUnavailableError


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'netra_rm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
