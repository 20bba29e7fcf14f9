"""Security: API tokens, roles, client-certificate identities, and the checks that enforce them."""
