"""aion.trust: deciding whether a module (or a file) was signed by someone the trust policy trusts.

Fails closed: every verifier returns what it verified or raises VerificationError.
"""
