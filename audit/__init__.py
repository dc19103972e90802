"""synthaudit: privacy and utility audit for synthetic image datasets.

The Python API (audit/api.py; docs/api.md): configure, run_audit, load_results, verdict, summary.
"""

from audit.api import AuditVerdict, configure, load_results, run_audit, summary, verdict
from audit.errors import AuditError

__all__ = [
    "AuditError",
    "AuditVerdict",
    "configure",
    "load_results",
    "run_audit",
    "summary",
    "verdict",
]
__version__ = "0.1.0"
