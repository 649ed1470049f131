"""The sensitivity audit of a checkpoint: per-tensor and per-layer Fisher, per-block curvature and
1D sensitivity, overall sharpness; ``report.md`` and a self-contained ``report.html``.

- ``study``: :class:`AuditConfig`, :func:`run` -> :class:`AuditResult` and the result files.
- ``report``: tables, figures and the Markdown / HTML reports, from a result or its folder.
"""

from analyses.audit.report import summary_table
from analyses.audit.study import (
    BLOCK_FIELDS,
    FIGURES,
    OVERALL_FIELDS,
    RESULT_FIELDS,
    AuditConfig,
    AuditResult,
    audit_blocks,
    block_space,
    run,
)

__all__ = ["AuditConfig", "AuditResult", "run", "audit_blocks", "block_space", "summary_table", "RESULT_FIELDS",
           "BLOCK_FIELDS", "OVERALL_FIELDS", "FIGURES"]
