"""The pure core: the policy language, the decision engine and the report model.

Nothing here talks to AWS or imports another layer; it reads a policy file at most.
"""
