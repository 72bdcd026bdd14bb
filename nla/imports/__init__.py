"""`nla import`: vectors that extraction did not make (SAE decoder rows, steering vectors, probe directions, centroids)
into the lake's activations table, so the labeling job explains and scores them like any activation."""
