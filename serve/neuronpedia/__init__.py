"""Neuronpedia's NLA API on the NLA Serve app: request bodies (api.py) and the routes that translate them (routes.py).

Nothing here loads a model or decides batching: the routes call the same deployments as /v1.
"""
