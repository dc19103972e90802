"""synthaudit: privacy and utility audit for synthetic image datasets."""

from audit.errors import AuditError

__all__ = ["AuditError"]
__version__ = "0.1.0"
