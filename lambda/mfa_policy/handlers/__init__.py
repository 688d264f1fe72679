"""The drivers AWS runs: Lambda entry points for Step Functions slices and the deploy-time run.

The construct and every deployed stack reference ``mfa_policy.handlers.<name>``: keep these
names here even if the code behind them moves.
"""

from mfa_policy.handlers.lambda_entry import (
    changed_user_handler,
    deploy_is_complete,
    deploy_on_event,
    slice_handler,
)

__all__ = ["changed_user_handler", "deploy_is_complete", "deploy_on_event", "slice_handler"]
