"""The drivers AWS runs: Lambda entry points for Step Functions slices and the deploy-time run.

The construct and every deployed stack reference ``mfa_policy.handlers.<name>``: keep these
names here even if the code behind them moves.
"""

from mfa_policy.handlers.lambda_entry import (
    HandlerSettings,
    deploy_is_complete,
    deploy_on_event,
    emit_run_metrics,
    run_slice,
    settings_from_env,
    slice_handler,
)

__all__ = [
    "HandlerSettings",
    "deploy_is_complete",
    "deploy_on_event",
    "emit_run_metrics",
    "run_slice",
    "settings_from_env",
    "slice_handler",
]
