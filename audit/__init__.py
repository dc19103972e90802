"""synthaudit: privacy and utility audit for synthetic image datasets.

The Python API (audit/api.py; docs/api.md): configure, run_audit, load_results, verdict, summary.
The names are loaded on first use, so `from audit.core.errors import AuditError` in a plugin does
not import the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from audit.api import AuditVerdict as AuditVerdict
    from audit.api import configure as configure
    from audit.api import load_results as load_results
    from audit.api import run_audit as run_audit
    from audit.api import summary as summary
    from audit.api import verdict as verdict
    from audit.core.errors import AuditError as AuditError

_EXPORTS = {
    "AuditError": "audit.core.errors",
    "AuditVerdict": "audit.api",
    "configure": "audit.api",
    "load_results": "audit.api",
    "run_audit": "audit.api",
    "summary": "audit.api",
    "verdict": "audit.api",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'audit' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
