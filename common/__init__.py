"""Server-side pieces both services share: TLS, authentication, secrets.

Never imported by the client.
"""
