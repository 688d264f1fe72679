"""Infra tests synthesize CDK apps: jsii starts Node on the first aws_cdk import."""

import os

# Keep Node's version banner out of test output (set before any test module imports aws_cdk).
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
