"""The AWS edge: the one cognito-idp gateway, its rate limits, the token table and S3 reports.

Clients are always passed in; nothing here composes a run.
"""
