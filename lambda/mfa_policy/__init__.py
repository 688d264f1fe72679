"""mfa-policy: keep a Cognito user pool's MFA preferences under a declared policy."""

__version__ = "0.1.0"
