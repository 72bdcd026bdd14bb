"""The fast GPU path, plain torch and transformers (no Ray): length-bucketed prefill for extraction and the AR
(prefill.py), a decode loop with a shared prefix and CUDA graphs for the AV (decode.py), the block math per family
(blocks.py), decode attention (attention.py; its Triton kernel in attention_triton.py) and per-row sampling streams
(sampling.py). Chosen with `models.fast` (labeling) or NLAClient(backend="fast"); it computes what the plain path
computes (tests/nla/fast/).
"""
