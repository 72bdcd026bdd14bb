"""`nla export`: labels out of the lake where people look for them: a Neuronpedia explanations export
(neuronpedia.py), a HF-datasets-ready Parquet folder with a dataset card (hf.py). Both stream."""
