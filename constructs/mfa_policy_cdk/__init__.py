"""CDK construct library for mfa-policy (import name ``mfa_policy_cdk``)."""
