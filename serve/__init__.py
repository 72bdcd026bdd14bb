"""The Ray Serve application: the NLA models and the lake behind an HTTP API and a web page.

- config.py: ServeConfig (YAML + key=value), limits, autoscaling per deployment.
- models.py: extractor, AV and AR deployments (@serve.batch); lake.py: the read-only lake deployment.
- ingress.py: the FastAPI ingress (endpoints, limits); api.py: request bodies; codec.py: vectors in JSON;
  security.py: bearer token, body limit, error mapping.
- app.py: resolve checkpoints and bind the deployments; __main__.py: `python -m nla.serve` (= `nla serve`).
- static/: the web page (plain HTML + JS, no build step).
- neuronpedia/: Neuronpedia's NLA API (their request and stream shapes) over the same deployments, at /neuronpedia.

Ray is imported here and in jobs/, never in nla/.
"""
