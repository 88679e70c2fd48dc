"""Pieces both services share: TLS, authentication, secrets, admission, errors.

The client imports only the pure modules here (status.py, imaging.py); never grpc_server.py
(health, metrics) nor anything else that needs the server extras.
"""
