"""Run machinery: the runner that composes core and gateway, checkpoints, journals, rollback."""
